//! Python's `multiprocessing` message passing for Rust.
//!
//! `multiproc` gives Rust programs what `multiprocessing.connection` gives Python programs:
//! [`Pipe`]s of [`Connection`]s that carry framed messages between processes, and a
//! [`Process`] to run a function in a child (spawned, forked, or any program with
//! connections passed to it). The framing is byte-for-byte CPython's, so a
//! Python process using `multiprocessing.connection.Connection` can sit at the other end and
//! exchange `send_bytes`/`recv_bytes` with us.
//!
//! Messages are either raw bytes (`send_bytes`/`recv_bytes`) or any serde type
//! (`send`/`recv`, encoded as CBOR).
//!
//! To serve many connections from one thread: [`wait`](fn@wait) (Python's
//! `multiprocessing.connection.wait`), a persistent [`WaitSet`], or a [`Reactor`] that drives
//! non-blocking receives and buffered sends through [`Handler`] callbacks, with timers and
//! backpressure. Every `Connection` is also a `mio::event::Source`, for your own mio loop.
//!
//! # Quick start
//! ```
//! # fn main() -> multiproc::Result<()> {
//! use multiproc::{Pipe, Process};
//!
//! let (mut parent, mut child) = Pipe::new()?;
//! let mut p = Process::fork(move || {
//!     let n: u64 = child.recv().unwrap();
//!     child.send(&(n * 2)).unwrap();
//! });
//! p.start()?;
//! parent.send(&21u64)?;
//! assert_eq!(parent.recv::<u64>()?, 42);
//! assert_eq!(p.join()?, 0);
//! # Ok(()) }
//! ```
//!
//! # Python to Rust
//!
//! | Python | multiproc |
//! |---|---|
//! | `a, b = Pipe()` | `let (a, b) = Pipe::new()?` |
//! | `r, w = Pipe(duplex=False)` | `let (r, w) = Pipe::half_duplex()?` |
//! | `conn.send(obj)` / `conn.recv()` | `conn.send(&obj)?` / `conn.recv::<T>()?` |
//! | `conn.send_bytes(b)` / `conn.recv_bytes()` | `conn.send_bytes(&b)?` / `conn.recv_bytes()?` |
//! | `conn.poll(timeout)` | `conn.poll(Some(timeout))?` |
//! | `conn.fileno()` | `conn.as_fd()` / `conn.as_raw_fd()` |
//! | `EOFError` | `Err(e)` with `e.kind() == ErrorKind::Eof` |
//! | `wait([a, b], timeout)` | `wait(&mut [&mut a, &mut b], Some(timeout))?` (indices of the ready ones) |
//! | a `select` loop over many connections | [`WaitSet`] (O(ready) per wait) or a [`Reactor`] |
//! | `Process(target=f, args=(x,)).start()` | `Process::spawn(f, x).start()?` (after `multiproc::init()` in `main`) |
//! | fork start method | `Process::fork(closure).start()?` |
//! | `p.sentinel` | `p.sentinel()?`, waitable anywhere a connection is |
//! | `Queue(maxsize)`, `put`, `get`, `qsize` | [`Queue::bounded`], `put(&x)?`, `get()?`, `qsize()` (exact) |
//! | `p.join(); p.exitcode` | `p.join()?` returns the exit code |
//!
//! `docs/python.md` in the repository has the full cheat-sheet.
//!
//! # Cargo features
//!
//! - `pickle` (default): `Encoding::Pickle`, so `send`/`recv` exchange plain data with a
//!   Python peer's own `send`/`recv`, and the `multiproc::pickle` module (`loads`/`dumps`
//!   of dynamic values).
#![deny(missing_docs, missing_debug_implementations, unsafe_code)]
#![warn(unsafe_op_in_unsafe_fn, unreachable_pub, rust_2018_idioms)]
#![doc(test(attr(deny(warnings))))]

mod codec;
mod connection;
mod error;
mod frame;
#[cfg(test)]
mod frame_proptests;
mod listener;
#[cfg(feature = "pickle")]
pub mod pickle;
mod process;
#[cfg(any(target_os = "linux", target_os = "android"))]
mod queue;
mod reactor;
mod sys;
mod wait;
mod wait_set;

pub use codec::Encoding;
pub use connection::{Connection, Pipe};
pub use error::{Error, ErrorKind, Result};
pub use listener::{Address, Client, Digest, Listener, ToAddress};
#[doc(hidden)]
pub use process::bench_support;
pub use process::{
    ActiveChild, Command, CurrentProcess, ParentProcess, Process, Sentinel, SpawnArgs,
    active_children, current_process, init, parent_process,
};
#[cfg(any(target_os = "linux", target_os = "android"))]
pub use queue::{JoinableQueue, Queue, SimpleQueue};
pub use reactor::{Context, Handler, Reactor, ReactorHandle, TimerId, Token, WatchId};
pub use wait::{Waitable, wait};
pub use wait_set::{Key, WaitSet};
