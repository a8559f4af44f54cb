//! Review probes of the reactor's last reads before an entry whose peer left is ended
//! (`read_rest`): whatever its handler does meanwhile, exactly one ending or none after a
//! panic, and no unbounded reading.

mod util;

use std::cell::RefCell;
use std::os::fd::AsFd;
use std::rc::Rc;
use std::time::Duration;

use multiproc::{Connection, Context, Error, ErrorKind, Handler, Pipe, Reactor, TimerId};
use util::TestResult;

#[derive(Default, Debug)]
struct Log {
    messages: Vec<Vec<u8>>,
    eofs: usize,
    errors: Vec<ErrorKind>,
}

#[derive(Clone, Copy, PartialEq)]
enum Action {
    Nothing,
    /// Closes its connection through `Context::connection`.
    CloseConnection,
    /// `Context::close`: end once the output is written.
    CloseGracefully,
    /// Puts another connection in its place.
    Replace,
    Panic,
    Echo,
}

/// Queues `queue` bytes on its timer (to pass the high-water mark), then does `action` on
/// every message.
struct Acting {
    log: Rc<RefCell<Log>>,
    queue: usize,
    action: Action,
}

impl Handler for Acting {
    fn on_message(&mut self, ctx: &mut Context<'_>, message: &[u8]) {
        self.log.borrow_mut().messages.push(message.to_vec());
        match self.action {
            Action::Nothing => {}
            Action::CloseConnection => ctx.connection().close(),
            Action::CloseGracefully => ctx.close(),
            Action::Replace => {
                let (_, other) = Pipe::new().unwrap();
                *ctx.connection() = other;
            }
            Action::Panic => panic!("handler blew up in its last reads"),
            Action::Echo => {
                let _ = ctx.send_bytes(message);
            }
        }
    }
    fn on_eof(&mut self, _: &mut Context<'_>) {
        self.log.borrow_mut().eofs += 1;
    }
    fn on_error(&mut self, _: &mut Context<'_>, error: Error) {
        self.log.borrow_mut().errors.push(error.kind());
    }
    fn on_timer(&mut self, ctx: &mut Context<'_>, _: TimerId) {
        let chunk = vec![3u8; 16 * 1024];
        for _ in 0..self.queue / chunk.len() {
            ctx.send_bytes(&chunk).unwrap();
        }
    }
}

type Setup<T> = Result<T, Box<dyn std::error::Error>>;

/// Registers an end whose output passes the high-water mark (so it is paused, not read);
/// its log and its peer, which has not read anything.
fn paused_end(reactor: &mut Reactor, action: Action) -> Setup<(Rc<RefCell<Log>>, Connection)> {
    let log = Rc::new(RefCell::new(Log::default()));
    let (a, b) = Pipe::new()?;
    let token = reactor.register(
        b,
        Acting {
            log: Rc::clone(&log),
            queue: 1 << 20,
            action,
        },
    )?;
    reactor.set_timer(token, Duration::ZERO)?;
    for _ in 0..3 {
        reactor.run_once(Some(Duration::ZERO))?;
    }
    Ok((log, a))
}

/// As [`paused_end`], then its peer sends `messages` and leaves without reading.
fn paused_end_whose_peer_left(
    reactor: &mut Reactor,
    action: Action,
    messages: &[&[u8]],
) -> Setup<Rc<RefCell<Log>>> {
    let (log, mut peer) = paused_end(reactor, action)?;
    for m in messages {
        peer.send_bytes(m)?;
    }
    drop(peer);
    Ok(log)
}

fn run_until_empty(reactor: &mut Reactor) -> TestResult {
    util::run_until_empty(reactor, 10, Duration::from_secs(5))
}

fn one_ending_when(action: Action, expected_error: ErrorKind) -> TestResult {
    let mut reactor = Reactor::new()?;
    reactor.set_high_water(64 * 1024);
    let log = paused_end_whose_peer_left(&mut reactor, action, &[b"one", b"two", b"three"])?;
    run_until_empty(&mut reactor)?;
    let log = log.borrow();
    assert!(reactor.is_empty(), "still registered; {log:?}");
    assert_eq!(log.messages, [b"one".to_vec()], "{log:?}");
    assert_eq!(log.errors, [expected_error], "{log:?}");
    assert_eq!(log.eofs, 0, "{log:?}");
    Ok(())
}

fn a_handler_closing_its_connection_in_its_last_reads_hears_one_error() -> TestResult {
    one_ending_when(Action::CloseConnection, ErrorKind::Closed)
}

fn a_handler_replacing_its_connection_in_its_last_reads_hears_one_error() -> TestResult {
    one_ending_when(Action::Replace, ErrorKind::InvalidInput)
}

fn a_handler_closing_gracefully_in_its_last_reads_hears_one_error() -> TestResult {
    one_ending_when(Action::CloseGracefully, ErrorKind::BrokenPipe)
}

fn all_last_messages_then_one_error() -> TestResult {
    let mut reactor = Reactor::new()?;
    reactor.set_high_water(64 * 1024);
    let log = paused_end_whose_peer_left(&mut reactor, Action::Nothing, &[b"one", b"two"])?;
    run_until_empty(&mut reactor)?;
    let log = log.borrow();
    assert!(reactor.is_empty(), "still registered; {log:?}");
    assert_eq!(log.messages, [b"one".to_vec(), b"two".to_vec()], "{log:?}");
    assert_eq!(log.errors, [ErrorKind::BrokenPipe], "{log:?}");
    assert_eq!(log.eofs, 0, "{log:?}");
    Ok(())
}

/// A handler panicking in its last reads: the panic leaves `run_once`, its entry is gone
/// with no ending callback, and another entry ending in the same round still hears its
/// last messages and its one error in the rounds after.
fn a_panic_in_the_last_reads_loses_nothing_of_another_ending_entry() -> TestResult {
    let mut reactor = Reactor::new()?;
    reactor.set_high_water(64 * 1024);
    let (bomb, mut bomb_peer) = paused_end(&mut reactor, Action::Panic)?;
    let (calm, mut calm_peer) = paused_end(&mut reactor, Action::Nothing)?;
    bomb_peer.send_bytes(b"boom")?;
    bomb_peer.send_bytes(b"never")?;
    calm_peer.send_bytes(b"x")?;
    calm_peer.send_bytes(b"y")?;
    drop((bomb_peer, calm_peer));
    let mut panics = 0;
    for _ in 0..10 {
        if reactor.is_empty() {
            break;
        }
        let round = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            reactor.run_once(Some(Duration::from_secs(5)))
        }));
        match round {
            Ok(result) => result?,
            Err(_) => panics += 1,
        }
    }
    assert!(reactor.is_empty());
    assert_eq!(panics, 1);
    let bomb = bomb.borrow();
    assert_eq!(bomb.messages, [b"boom".to_vec()], "{bomb:?}");
    assert!(bomb.errors.is_empty() && bomb.eofs == 0, "{bomb:?}");
    let calm = calm.borrow();
    assert_eq!(calm.messages, [b"x".to_vec(), b"y".to_vec()], "{calm:?}");
    assert_eq!(calm.errors, [ErrorKind::BrokenPipe], "{calm:?}");
    assert_eq!(calm.eofs, 0, "{calm:?}");
    Ok(())
}

/// A peer that shuts down its reading side (`shutdown(SHUT_RD)`) and writes without end:
/// the echo's flush fails (`EPIPE`), the last reads are bounded, one error ends it, and
/// the writer then fails too.
fn a_peer_that_stops_reading_and_writes_forever_is_ended_once() -> TestResult {
    let log = Rc::new(RefCell::new(Log::default()));
    let (mut a, b) = Pipe::new()?;
    rustix::net::shutdown(a.as_fd(), rustix::net::Shutdown::Read)?;
    let writer = std::thread::spawn(move || {
        let mut sent = 0u64;
        while a.send_bytes(&[7u8; 64]).is_ok() {
            sent += 1;
        }
        sent
    });
    let mut reactor = Reactor::new()?;
    reactor.register(
        b,
        Acting {
            log: Rc::clone(&log),
            queue: 0,
            action: Action::Echo,
        },
    )?;
    let mut rounds = 0;
    while !reactor.is_empty() {
        rounds += 1;
        assert!(
            rounds < 10_000,
            "not ended: {} messages",
            log.borrow().messages.len()
        );
        reactor.run_once(Some(Duration::from_secs(5)))?;
    }
    let sent = writer.join().unwrap();
    let log = log.borrow();
    assert_eq!(log.errors, [ErrorKind::BrokenPipe], "{:?}", log.errors);
    assert_eq!(log.eofs, 0);
    assert!(log.messages.len() as u64 <= sent);
    Ok(())
}

/// A write-only end whose reader left with its output queued: no reading, one error.
fn a_write_only_end_whose_reader_left_hears_one_error() -> TestResult {
    let log = Rc::new(RefCell::new(Log::default()));
    let (r, w) = Pipe::half_duplex()?;
    let mut reactor = Reactor::new()?;
    reactor.set_high_water(64 * 1024);
    let token = reactor.register(
        w,
        Acting {
            log: Rc::clone(&log),
            queue: 1 << 20,
            action: Action::Nothing,
        },
    )?;
    reactor.set_timer(token, Duration::ZERO)?;
    for _ in 0..3 {
        reactor.run_once(Some(Duration::ZERO))?;
    }
    drop(r);
    run_until_empty(&mut reactor)?;
    let log = log.borrow();
    assert!(reactor.is_empty());
    assert!(log.messages.is_empty());
    assert_eq!(log.errors, [ErrorKind::BrokenPipe], "{log:?}");
    Ok(())
}

tests_main!(
    a_handler_closing_its_connection_in_its_last_reads_hears_one_error,
    a_handler_replacing_its_connection_in_its_last_reads_hears_one_error,
    a_handler_closing_gracefully_in_its_last_reads_hears_one_error,
    all_last_messages_then_one_error,
    a_panic_in_the_last_reads_loses_nothing_of_another_ending_entry,
    a_peer_that_stops_reading_and_writes_forever_is_ended_once,
    a_write_only_end_whose_reader_left_hears_one_error,
);
