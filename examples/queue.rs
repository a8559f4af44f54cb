//! Producer and consumer over a `Queue`, as in the tutorial.
//!
//! A line-for-line port of the tutorial's Python program
//! (`../shared/seeds/000_95be7ad0c26243be.txt`, "Queue"):
//!
//! ```python
//! def producer(queue):
//!     for i in range(5):
//!         print(f"Producer: Adding {i} to queue")
//!         queue.put(i)
//!
//! def consumer(queue):
//!     while not queue.empty():
//!         item = queue.get()
//!         print(f"Consumer: Retrieved {item} from queue")
//!
//! if __name__ == "__main__":
//!     queue = Queue()
//!     producer_process = Process(target=producer, args=(queue,))
//!     consumer_process = Process(target=consumer, args=(queue,))
//!     producer_process.start()
//!     producer_process.join()
//!     consumer_process.start()
//!     consumer_process.join()
//! ```
//!
//! Both print the same ten lines. In CPython the consumer gets all five because the producer
//! has exited first, and a process's exit waits for its queue's feeder thread to flush the
//! items into the pipe; `empty()` itself only looks at the pipe, so right after a `put` it is
//! often still true. Here `put` is final when it returns and `empty()` is exact, so the
//! consumer would get all five even while the producer still ran.
//!
//! Run it with `cargo run --release --example queue`.

use multiproc::{Process, Queue};

fn producer(queue: Queue<i32>) {
    for i in 0..5 {
        println!("Producer: Adding {i} to queue");
        queue.put(&i).expect("put");
    }
}

fn consumer(queue: Queue<i32>) {
    while !queue.empty() {
        let item = queue.get().expect("get");
        println!("Consumer: Retrieved {item} from queue");
    }
}

fn main() -> multiproc::Result<()> {
    multiproc::init(); // in a spawned child, runs its function and exits here
    let queue = Queue::new()?;

    let mut producer_process = Process::spawn(producer, queue.clone());
    let mut consumer_process = Process::spawn(consumer, queue.clone());

    producer_process.start()?;
    producer_process.join()?;

    consumer_process.start()?;
    consumer_process.join()?;
    Ok(())
}
