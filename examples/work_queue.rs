//! Four producer processes and four consumer processes over one `JoinableQueue`.
//!
//! Producers put jobs (count the primes below a number); consumers take them, put each
//! result on a second queue and mark the job done. The parent waits with
//! `JoinableQueue::join` until every job was processed, stops the consumers, and prints a
//! summary: the jobs put (per producer, and in all), the jobs each consumer took, and a
//! check that every job came back exactly once with the right answer.
//!
//! Run it with `cargo run --release --example work_queue`.

use std::collections::BTreeMap;
use std::time::Instant;

use multiproc::{JoinableQueue, Process, Queue};
use serde::{Deserialize, Serialize};

const PRODUCERS: u32 = 4;
const CONSUMERS: u32 = 4;
const JOBS_EACH: u32 = 250;

#[derive(Serialize, Deserialize, Debug)]
enum Job {
    CountPrimes { producer: u32, seq: u32, below: u32 },
    Stop,
}

#[derive(Serialize, Deserialize, Debug)]
struct Done {
    producer: u32,
    seq: u32,
    primes: u32,
    consumer: u32,
}

fn count_primes(below: u32) -> u32 {
    (2..below)
        .filter(|&n| (2..).take_while(|d| d * d <= n).all(|d| n % d != 0))
        .count() as u32
}

fn job_size(producer: u32, seq: u32) -> u32 {
    1_000 + (producer * 7_919 + seq * 104_729) % 20_000
}

#[derive(Serialize, Deserialize)]
struct ProducerArgs {
    id: u32,
    jobs: JoinableQueue<Job>,
}

fn producer(args: ProducerArgs) {
    for seq in 0..JOBS_EACH {
        let below = job_size(args.id, seq);
        let job = Job::CountPrimes {
            producer: args.id,
            seq,
            below,
        };
        args.jobs.put(&job).expect("put job");
    }
}

#[derive(Serialize, Deserialize)]
struct ConsumerArgs {
    id: u32,
    jobs: JoinableQueue<Job>,
    results: Queue<Done>,
}

fn consumer(args: ConsumerArgs) {
    loop {
        let job = args.jobs.get().expect("get job");
        let stop = matches!(job, Job::Stop);
        if let Job::CountPrimes {
            producer,
            seq,
            below,
        } = job
        {
            let done = Done {
                producer,
                seq,
                primes: count_primes(below),
                consumer: args.id,
            };
            args.results.put(&done).expect("put result");
        }
        args.jobs.task_done().expect("task_done");
        if stop {
            return;
        }
    }
}

fn main() -> multiproc::Result<()> {
    multiproc::init(); // in a spawned child, runs its function and exits here
    let jobs: JoinableQueue<Job> = JoinableQueue::new()?;
    let results: Queue<Done> = Queue::new()?;
    let started = Instant::now();

    let mut consumers = Vec::new();
    for id in 0..CONSUMERS {
        let args = ConsumerArgs {
            id,
            jobs: jobs.clone(),
            results: results.clone(),
        };
        let mut p = Process::spawn(consumer, args);
        p.set_name(format!("consumer-{id}"));
        p.start()?;
        consumers.push(p);
    }
    let mut producers = Vec::new();
    for id in 0..PRODUCERS {
        let mut p = Process::spawn(
            producer,
            ProducerArgs {
                id,
                jobs: jobs.clone(),
            },
        );
        p.set_name(format!("producer-{id}"));
        p.start()?;
        producers.push(p);
    }
    for p in &mut producers {
        assert_eq!(p.join()?, 0, "{} failed", p.name());
    }
    println!("producers done: {} jobs queued", PRODUCERS * JOBS_EACH);
    jobs.join()?; // every job taken and marked done
    println!(
        "all jobs processed after {:.2} s",
        started.elapsed().as_secs_f64()
    );
    for _ in 0..CONSUMERS {
        jobs.put(&Job::Stop)?;
    }
    for p in &mut consumers {
        assert_eq!(p.join()?, 0, "{} failed", p.name());
    }

    let mut seen = BTreeMap::new();
    let mut per_consumer = BTreeMap::new();
    let mut wrong = 0;
    while let Ok(done) = results.try_get() {
        if done.primes != count_primes(job_size(done.producer, done.seq)) {
            wrong += 1;
        }
        *seen.entry((done.producer, done.seq)).or_insert(0u32) += 1;
        *per_consumer.entry(done.consumer).or_insert(0u32) += 1;
    }
    let expected = PRODUCERS * JOBS_EACH;
    let once = seen.len() as u32 == expected && seen.values().all(|&n| n == 1);

    println!();
    println!("summary");
    println!("  jobs        {expected} put by {PRODUCERS} producers, {JOBS_EACH} each");
    println!(
        "  results     {} received, {}, {wrong} wrong",
        seen.values().sum::<u32>(),
        if once {
            "each job exactly once"
        } else {
            "SOME JOBS MISSING OR REPEATED"
        }
    );
    println!("  wall time   {:.2} s", started.elapsed().as_secs_f64());
    println!();
    println!("  consumer  jobs");
    for (id, n) in &per_consumer {
        println!("  {id:>8}  {n:>4}");
    }
    if !once || wrong > 0 {
        eprintln!("work_queue: results failed verification");
        std::process::exit(1);
    }
    Ok(())
}
