//! Embedding multiproc in your own mio loop: one `Poll` serves a TCP port and several child
//! processes' Connections together.
//!
//! Three workers (child processes) each send five readings over a duplex pipe. The main
//! loop accepts TCP clients on 127.0.0.1 and forwards every reading to all of them as a text
//! line. A TCP client thread connects, prints what it receives, and the program ends when
//! every worker has finished and the client has read everything.
//!
//! The workers start once `--clients N` TCP clients (default 1, the program's own) have
//! connected, so other clients can be sure to see every reading. A client whose connection
//! fails (reset, closed with unread data, …) is dropped with one line on stderr; the loop
//! carries on serving the others and the workers.
//!
//! The one rule of embedding: mio is edge-triggered and a `Connection` reads ahead, so on
//! each readable event drain it with `try_recv` until `Ok(None)`.
//!
//! ```sh
//! cargo run --release --example select_loop
//! cargo run --release --example select_loop -- --clients 2   # and connect one more yourself
//! ```

use std::collections::HashMap;
use std::io::{BufRead, BufReader, ErrorKind as IoKind, Write};
use std::net::SocketAddr;
use std::time::Duration;

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use multiproc::{Connection, Pipe, Process};
use serde::{Deserialize, Serialize};

const LISTENER: Token = Token(0);
const WORKERS: usize = 3;
const READINGS: u32 = 5;
/// The most TCP clients `--clients` may ask to wait for.
const MAX_CLIENTS: usize = 1000;

const USAGE: &str = "\
usage: select_loop [--clients N]

  --clients N  TCP clients, the program's own included, to wait for before the workers
               start (1 to 1000, default 1)";

/// The `--clients` value, or a usage error.
fn parse_args() -> Result<usize, String> {
    let mut clients = 1;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            "--clients" => {
                let value = args.next().ok_or("--clients needs a value")?;
                clients = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_CLIENTS).contains(n))
                    .ok_or_else(|| {
                        format!("--clients: {value:?} is not a number from 1 to {MAX_CLIENTS}")
                    })?;
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(clients)
}

#[derive(Serialize, Deserialize, Debug)]
struct Reading {
    worker: usize,
    seq: u32,
    value: f64,
}

/// A TCP client with the bytes it has not yet taken.
struct Client {
    stream: TcpStream,
    peer: SocketAddr,
    out: Vec<u8>,
}

impl Client {
    fn flush(&mut self) -> std::io::Result<()> {
        while !self.out.is_empty() {
            match self.stream.write(&self.out) {
                Ok(n) => {
                    self.out.drain(..n);
                }
                Err(e) if e.kind() == IoKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

fn worker(id: usize, mut conn: Connection) {
    // Wait for the go-ahead, so no reading is sent before a TCP client listens.
    let _: String = conn.recv().expect("go-ahead");
    for seq in 0..READINGS {
        let value = (id * 100) as f64 + f64::from(seq);
        conn.send(&Reading {
            worker: id,
            seq,
            value,
        })
        .expect("send reading");
        std::thread::sleep(Duration::from_millis(10)); // simulated work
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let wait_for = match parse_args() {
        Ok(n) => n,
        Err(e) => {
            eprintln!("select_loop: {e}\n{USAGE}");
            std::process::exit(2);
        }
    };
    // Children first: fork is refused once this process has other threads.
    let mut workers = Vec::new();
    let mut conns = HashMap::new();
    for id in 0..WORKERS {
        let (parent_end, child_end) = Pipe::new()?;
        let mut p = Process::fork(move || worker(id, child_end));
        p.start()?;
        workers.push(p);
        conns.insert(Token(id + 1), parent_end);
    }

    let mut poll = Poll::new()?;
    let mut listener = TcpListener::bind("127.0.0.1:0".parse()?)?;
    let addr = listener.local_addr()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    for (token, conn) in conns.iter_mut() {
        poll.registry().register(conn, *token, Interest::READABLE)?;
    }
    println!("serving readings on tcp://{addr}");

    let tcp_client = std::thread::spawn(move || -> std::io::Result<usize> {
        let stream = std::net::TcpStream::connect(addr)?;
        let mut lines = 0;
        for line in BufReader::new(stream).lines() {
            println!("[tcp client] {}", line?);
            lines += 1;
        }
        Ok(lines)
    });

    let mut clients: HashMap<Token, Client> = HashMap::new();
    let mut next_token = WORKERS + 1;
    let mut events = Events::with_capacity(64);
    let mut accepted = 0;
    let mut started = false;
    while !conns.is_empty() || clients.values().any(|c| !c.out.is_empty()) {
        poll.poll(&mut events, Some(Duration::from_secs(10)))?;
        if events.is_empty() {
            return Err("no progress for 10 s".into());
        }
        for event in events.iter() {
            let token = event.token();
            if token == LISTENER {
                loop {
                    match listener.accept() {
                        Ok((mut stream, peer)) => {
                            let t = Token(next_token);
                            next_token += 1;
                            if let Err(e) =
                                poll.registry().register(&mut stream, t, Interest::WRITABLE)
                            {
                                eprintln!("client {peer} dropped: {e}");
                                continue;
                            }
                            clients.insert(
                                t,
                                Client {
                                    stream,
                                    peer,
                                    out: Vec::new(),
                                },
                            );
                            accepted += 1;
                            println!("client {peer} connected");
                        }
                        Err(e) if e.kind() == IoKind::WouldBlock => break,
                        // A connection that failed before we took it: the next may be fine.
                        Err(e) if e.kind() == IoKind::ConnectionAborted => {}
                        // Out of fds, say: the clients already served carry on.
                        Err(e) => {
                            eprintln!("accept failed: {e}");
                            break;
                        }
                    }
                }
                if !started && accepted >= wait_for {
                    started = true;
                    for conn in conns.values_mut() {
                        conn.send("go")?;
                    }
                }
            } else if let Some(conn) = conns.get_mut(&token) {
                // Drain: edge-triggered, and several readings may already be buffered.
                let mut finished = false;
                loop {
                    match conn.try_recv::<Reading>() {
                        Ok(Some(r)) => {
                            let line =
                                format!("worker {} reading {}: {:.1}\n", r.worker, r.seq, r.value);
                            for client in clients.values_mut() {
                                client.out.extend_from_slice(line.as_bytes());
                            }
                        }
                        Ok(None) => break,
                        Err(e) if e.is_eof() => {
                            finished = true;
                            break;
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                if finished {
                    let mut conn = conns.remove(&token).expect("present");
                    poll.registry().deregister(&mut conn)?;
                    println!("worker {} finished", token.0 - 1);
                }
            }
        }
        // One client's failure is its own: drop it and carry on with the rest.
        clients.retain(|_, client| match client.flush() {
            Ok(()) => true,
            Err(e) => {
                eprintln!("client {} dropped: {e}", client.peer);
                let _ = poll.registry().deregister(&mut client.stream);
                false
            }
        });
    }
    // Every reading is written: closing the streams ends the client's read loop.
    drop(clients);
    let lines = tcp_client.join().map_err(|_| "tcp client panicked")??;
    for w in workers {
        w.join()?;
    }
    println!("done: {lines} readings forwarded from {WORKERS} workers over TCP");
    Ok(())
}
