//! An echo server for any number of clients, from one thread, through the Reactor.
//!
//! ```sh
//! cargo run --release --example echo_server -- --address ADDR [--authkey-env VAR] [--codec bytes|cbor|pickle]
//! ```
//!
//! `ADDR` is a Unix path, `@name` (or `"\0name"`) for a Linux abstract socket, or
//! `host:port` for TCP. With `--authkey-env VAR`, clients must pass CPython's authkey
//! handshake with the key in environment variable `VAR`. Once bound, the server prints one
//! line, `listening on ADDR`, to stdout.
//!
//! - `bytes` (default): every message comes back unchanged.
//! - `cbor` / `pickle`: every message is decoded to a dynamic value and the value re-encoded
//!   is sent back (so a Python client's `conn.send(obj)` gets `obj` back with `pickle`).
//!
//! A client that fails authentication, sends a bad frame or an undecodable payload is
//! disconnected with one line on stderr; everyone else carries on. A frame over 64 MiB is a
//! bad frame. SIGTERM or SIGINT: exit 0.
//!
//! Memory is bounded per client, not in total. A client can make the server hold one
//! message of up to 64 MiB (being received, or echoed and not yet read) plus 1 MiB: the
//! server stops reading from a client whose unsent output passes 1 MiB until it falls to
//! half that, so a client that never reads its echoes holds one echo, not a growing pile.
//! Echoing briefly holds a second copy of the message being echoed. The total grows with the
//! number of clients: bound them (`ulimit -n`, a firewall) to bound the server.
//!
//! Try it with a Python client:
//!
//! ```sh
//! MYKEY=secret cargo run --release --example echo_server -- --address 127.0.0.1:6000 --authkey-env MYKEY --codec pickle
//! python3 -c "from multiprocessing.connection import Client; c = Client(('127.0.0.1', 6000), authkey=b'secret'); c.send({'a': [1, 2**80]}); print(c.recv())"
//! ```

use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;

use multiproc::{Context, Encoding, Error, Handler, Listener, Reactor, Waitable};
use signal_hook::consts::{SIGINT, SIGTERM};

/// The largest message a client may send.
const MAX_MESSAGE: u64 = 64 << 20;
/// Unsent output above which the server stops reading from a client (the Reactor's
/// backpressure), so a client that never reads holds one echo, not a growing pile.
const HIGH_WATER: usize = 1 << 20;

const USAGE: &str =
    "usage: echo_server --address ADDR [--authkey-env VAR] [--codec bytes|cbor|pickle]";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Codec {
    Bytes,
    Cbor,
    Pickle,
}

struct Config {
    address: String,
    authkey: Option<Vec<u8>>,
    codec: Codec,
}

fn parse_args() -> Result<Config, String> {
    let mut address = None;
    let mut authkey = None;
    let mut codec = Codec::Bytes;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--address" => address = Some(value()?),
            "--authkey-env" => {
                let var = value()?;
                let key = std::env::var_os(&var)
                    .ok_or_else(|| format!("environment variable {var} is not set"))?;
                authkey = Some(key.into_encoded_bytes());
            }
            "--codec" => {
                codec = match value()?.as_str() {
                    "bytes" => Codec::Bytes,
                    "cbor" => Codec::Cbor,
                    "pickle" if cfg!(feature = "pickle") => Codec::Pickle,
                    "pickle" => return Err("built without the pickle feature".into()),
                    other => return Err(format!("unknown codec {other:?}")),
                }
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(Config {
        address: address.ok_or("--address is required")?,
        authkey,
        codec,
    })
}

/// Echoes each message of one client.
struct Echo {
    codec: Codec,
    peer: String,
}

impl Handler for Echo {
    fn on_message(&mut self, ctx: &mut Context<'_>, message: &[u8]) {
        let sent = match self.codec {
            Codec::Bytes => ctx.send_bytes(message),
            Codec::Cbor => ctx
                .decode::<ciborium::Value>(message)
                .and_then(|value| ctx.send(&value)),
            // A dynamic value keeps tuples, sets and big ints as Python sent them.
            #[cfg(feature = "pickle")]
            Codec::Pickle => multiproc::pickle::loads(message)
                .and_then(|value| multiproc::pickle::dumps(&value))
                .and_then(|pickle| ctx.send_bytes(&pickle)),
            #[cfg(not(feature = "pickle"))]
            Codec::Pickle => unreachable!("refused when parsing arguments"),
        };
        if let Err(e) = sent {
            eprintln!("echo_server: {}: {e}; disconnecting", self.peer);
            ctx.close();
        }
    }

    fn on_error(&mut self, _ctx: &mut Context<'_>, error: Error) {
        eprintln!("echo_server: {}: {error}; disconnecting", self.peer);
    }
}

/// The read end of a socket the signal handler writes a byte to.
struct SignalPipe(UnixStream);

impl Waitable for SignalPipe {
    fn wait_fd(&self) -> multiproc::Result<BorrowedFd<'_>> {
        Ok(self.0.as_fd())
    }

    fn is_ready(&mut self) -> bool {
        self.0.as_fd().is_ready()
    }
}

/// Takes every authenticated client the listener has, then waits for more.
fn accept_clients(reactor: &mut Reactor, mut listener: Listener, codec: Codec) {
    let mut clients = 0u64;
    loop {
        match listener.try_accept() {
            Ok(Some(mut conn)) => {
                clients += 1;
                conn.set_encoding(Encoding::Cbor);
                conn.set_max_message_len(MAX_MESSAGE);
                let peer = format!("client fd {}", std::os::fd::AsRawFd::as_raw_fd(&conn));
                if let Err(e) = reactor.register(conn, Echo { codec, peer }) {
                    eprintln!("echo_server: cannot serve a client: {e}");
                }
            }
            Ok(None) => break,
            Err(e) => eprintln!("echo_server: a client failed: {e}; disconnected"),
        }
    }
    let _ = clients;
    if let Err(e) = reactor.when_ready(listener, move |reactor, listener| {
        accept_clients(reactor, listener, codec)
    }) {
        eprintln!("echo_server: cannot wait for clients: {e}");
        reactor.stop();
    }
}

fn main() {
    let config = match parse_args() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("echo_server: {e}\n{USAGE}");
            std::process::exit(2);
        }
    };
    if let Err(e) = serve(config) {
        eprintln!("echo_server: {e}");
        std::process::exit(1);
    }
}

fn serve(config: Config) -> Result<(), Box<dyn std::error::Error>> {
    let mut reactor = Reactor::new()?;
    reactor.set_high_water(HIGH_WATER);
    for signal in [SIGINT, SIGTERM] {
        let (read, write) = UnixStream::pair()?;
        signal_hook::low_level::pipe::register(signal, write)?;
        reactor.when_ready(SignalPipe(read), |reactor, _| reactor.stop())?;
    }
    let listener = Listener::bind(config.address.as_str(), config.authkey.as_deref())?;
    let mut stdout = std::io::stdout();
    writeln!(stdout, "listening on {}", listener.local_addr())?;
    stdout.flush()?;
    accept_clients(&mut reactor, listener, config.codec);
    reactor.run()?;
    Ok(())
}
