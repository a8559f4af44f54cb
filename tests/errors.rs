//! Error kinds across modules, as each function's `# Errors` documents them, and the
//! conversions to and from `std::io::Error`: real fds, sockets and processes.

mod util;

use std::cell::RefCell;
use std::error::Error as StdError;
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::time::Duration;

use multiproc::{
    Client, Connection, Context, Error, ErrorKind, Handler, JoinableQueue, Listener, Pipe, Process,
    Queue, Reactor, TimerId, WaitSet, wait,
};
use util::TestResult;

const SHORT: Duration = Duration::from_millis(1);

/// The kind of `r`'s error; fails the test on `Ok`, or on an empty or multi-line message.
fn kind_of<T: std::fmt::Debug>(what: &str, r: multiproc::Result<T>) -> ErrorKind {
    match r {
        Ok(v) => panic!("{what}: expected an error, got Ok({v:?})"),
        Err(e) => {
            let text = e.to_string();
            assert!(!text.is_empty() && !text.contains('\n'), "{what}: {text:?}");
            e.kind()
        }
    }
}

/// A connection whose peer is a raw socket: bytes no sender of ours writes.
fn raw_peer() -> io::Result<(UnixStream, Connection)> {
    let (a, b) = Pipe::new()?;
    Ok((UnixStream::from(OwnedFd::from(a)), b))
}

fn connection_kinds() -> TestResult {
    let (mut a, b) = Pipe::new()?;
    drop(b);
    assert_eq!(
        kind_of("send, peer gone", a.send_bytes(b"x")),
        ErrorKind::BrokenPipe
    );
    assert_eq!(kind_of("recv, peer gone", a.recv_bytes()), ErrorKind::Eof);
    let (r, mut w) = Pipe::half_duplex()?;
    drop(r);
    assert_eq!(
        kind_of("pipe send, reader gone", w.send_bytes(b"x")),
        ErrorKind::BrokenPipe
    );
    assert_eq!(
        kind_of("pipe try_send, reader gone", w.try_send_bytes(b"x")),
        ErrorKind::BrokenPipe
    );

    let (mut a, _b) = Pipe::new()?;
    a.close();
    assert_eq!(kind_of("closed send", a.send(&1)), ErrorKind::Closed);
    assert_eq!(kind_of("closed recv", a.recv_bytes()), ErrorKind::Closed);
    assert_eq!(kind_of("closed poll", a.poll(None)), ErrorKind::Closed);
    assert_eq!(
        kind_of("closed try_recv", a.try_recv_bytes()),
        ErrorKind::Closed
    );
    assert_eq!(
        kind_of("closed recv_timeout", a.recv_bytes_timeout(SHORT)),
        ErrorKind::Closed
    );
    // It used to say Ok(true) ("all written") where every other method says Closed.
    assert_eq!(kind_of("closed flush", a.flush()), ErrorKind::Closed);
    assert_eq!(
        kind_of("closed wait", wait(&mut [&mut a], Some(SHORT))),
        ErrorKind::Closed
    );
    let mut set = WaitSet::new()?;
    assert_eq!(
        kind_of("closed WaitSet::insert", set.insert(a)),
        ErrorKind::Closed
    );

    let (mut a, mut b) = Pipe::new()?;
    assert_eq!(
        kind_of("recv_timeout", b.recv_bytes_timeout(SHORT)),
        ErrorKind::Timeout
    );
    a.send_bytes(b"y")?;
    assert_eq!(b.recv_bytes_timeout(Duration::MAX)?, b"y");
    a.send_bytes(&[0xff])?;
    assert_eq!(kind_of("decode", b.recv::<u32>()), ErrorKind::Decode);
    assert_eq!(
        kind_of(
            "send_bytes_range",
            a.send_bytes_range(b"abc", usize::MAX, Some(usize::MAX))
        ),
        ErrorKind::InvalidInput
    );

    let (mut raw, mut b) = raw_peer()?;
    raw.write_all(&[0xff, 0xff, 0xff, 0xfe])?;
    assert_eq!(
        kind_of("negative length", b.recv_bytes()),
        ErrorKind::BadMessageLength
    );
    let (mut raw, mut b) = raw_peer()?;
    raw.write_all(&[0xff; 12])?;
    let e = b.recv_bytes().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BadMessageLength);
    assert!(e.to_string().len() < 200, "{e}");
    let (mut raw, mut b) = raw_peer()?;
    raw.write_all(&[0, 0, 0, 10, 1, 2])?;
    drop(raw);
    assert_eq!(
        kind_of("truncated", b.recv_bytes()),
        ErrorKind::TruncatedMessage
    );

    let (mut r, mut w) = Pipe::half_duplex()?;
    assert_eq!(
        kind_of("send on read end", r.send_bytes(b"x")),
        ErrorKind::ReadOnly
    );
    assert_eq!(
        kind_of("recv on write end", w.recv_bytes()),
        ErrorKind::WriteOnly
    );
    assert_eq!(
        kind_of("poll on write end", w.poll(Some(SHORT))),
        ErrorKind::WriteOnly
    );
    assert_eq!(
        kind_of(
            "wait on nothing",
            wait::<&mut Connection>(&mut [], Some(Duration::MAX))
        ),
        ErrorKind::InvalidInput
    );
    Ok(())
}

fn queue_kinds() -> TestResult {
    let q: Queue<u32> = Queue::bounded(1)?;
    assert_eq!(kind_of("try_get", q.try_get()), ErrorKind::Empty);
    assert_eq!(
        kind_of("get_timeout", q.get_timeout(SHORT)),
        ErrorKind::Empty
    );
    q.put(&1)?;
    assert_eq!(kind_of("try_put", q.try_put(&2)), ErrorKind::Full);
    assert_eq!(
        kind_of("put_timeout", q.put_timeout(&2, SHORT)),
        ErrorKind::Full
    );
    q.close();
    assert_eq!(kind_of("put after close", q.put(&3)), ErrorKind::Closed);
    assert_eq!(q.get_timeout(Duration::MAX)?, 1);
    q.shutdown(false);
    assert_eq!(kind_of("get after shutdown", q.get()), ErrorKind::ShutDown);
    assert_eq!(
        kind_of("try_get after shutdown", q.try_get()),
        ErrorKind::ShutDown
    );

    let q: Queue<u32> = Queue::bounded(usize::MAX)?;
    q.put_bytes(&[0xff])?;
    assert_eq!(kind_of("queue decode", q.get()), ErrorKind::Decode);
    let jq: JoinableQueue<u32> = JoinableQueue::new()?;
    assert_eq!(
        kind_of("task_done", jq.task_done()),
        ErrorKind::InvalidInput
    );
    jq.put(&1)?;
    assert_eq!(
        kind_of("join_timeout", jq.join_timeout(SHORT)),
        ErrorKind::Timeout
    );
    Ok(())
}

fn process_kinds() -> TestResult {
    let p = Process::fork(|| {});
    assert_eq!(kind_of("join unstarted", p.join()), ErrorKind::InvalidInput);
    assert_eq!(
        kind_of("terminate unstarted", p.terminate()),
        ErrorKind::InvalidInput
    );
    let (mut parent, mut child) = Pipe::new()?;
    let mut p = Process::fork(move || {
        let _ = child.recv_bytes();
    });
    p.start()?;
    assert_eq!(kind_of("start twice", p.start()), ErrorKind::InvalidInput);
    assert_eq!(
        kind_of("join_timeout", p.join_timeout(SHORT)),
        ErrorKind::Timeout
    );
    assert_eq!(
        kind_of("set_daemon started", p.set_daemon(true)),
        ErrorKind::InvalidInput
    );
    parent.send_bytes(b"go")?;
    assert_eq!(p.join_timeout(Duration::MAX)?, 0);
    Ok(())
}

fn listener_and_reactor_kinds() -> TestResult {
    assert_eq!(
        kind_of("bind empty", Listener::bind("", None)),
        ErrorKind::InvalidInput
    );
    assert_eq!(
        kind_of("bind bad port", Listener::bind("127.0.0.1:99999", None)),
        ErrorKind::InvalidInput
    );
    assert_eq!(
        kind_of("connect refused", Client::connect("127.0.0.1:1", None)),
        ErrorKind::Io
    );
    let mut l = Listener::bind("127.0.0.1:0", Some(b"key"))?;
    let address = l.local_addr().clone();
    assert_eq!(
        kind_of("accept_timeout", l.accept_timeout(SHORT)),
        ErrorKind::Timeout
    );
    let client = std::thread::spawn(move || Client::connect(address, Some(b"wrong")).map(|_| ()));
    assert_eq!(
        kind_of("accept, wrong key", l.accept()),
        ErrorKind::Authentication
    );
    let client = client.join().map_err(|_| "client panicked")?;
    assert_eq!(
        kind_of("connect, wrong key", client),
        ErrorKind::Authentication
    );
    l.close();
    assert_eq!(kind_of("accept closed", l.accept()), ErrorKind::Closed);

    struct Quiet;
    impl Handler for Quiet {
        fn on_message(&mut self, _: &mut Context<'_>, _: &[u8]) {}
    }
    let mut reactor = Reactor::new()?;
    assert_eq!(
        kind_of("run_once on nothing", reactor.run_once(None)),
        ErrorKind::InvalidInput
    );
    let (mut closed, _peer) = Pipe::new()?;
    closed.close();
    assert_eq!(
        kind_of("register closed", reactor.register(closed, Quiet)),
        ErrorKind::Closed
    );
    let (conn, _peer) = Pipe::new()?;
    let token = reactor.register(conn, Quiet)?;
    assert_eq!(
        kind_of(
            "timer past any Instant",
            reactor.set_timer(token, Duration::MAX)
        ),
        ErrorKind::InvalidInput
    );
    assert_eq!(
        kind_of("zero period", reactor.set_periodic(token, Duration::ZERO)),
        ErrorKind::InvalidInput
    );
    reactor.deregister(token);
    assert_eq!(
        kind_of("stale token", reactor.set_timer(token, SHORT)),
        ErrorKind::InvalidInput
    );
    Ok(())
}

/// Every `ErrorKind` there is.
const ALL_KINDS: [ErrorKind; 18] = [
    ErrorKind::Eof,
    ErrorKind::TruncatedMessage,
    ErrorKind::BadMessageLength,
    ErrorKind::Closed,
    ErrorKind::BrokenPipe,
    ErrorKind::ReadOnly,
    ErrorKind::WriteOnly,
    ErrorKind::InvalidInput,
    ErrorKind::BufferTooShort,
    ErrorKind::Timeout,
    ErrorKind::Full,
    ErrorKind::Empty,
    ErrorKind::ShutDown,
    ErrorKind::Encode,
    ErrorKind::Decode,
    ErrorKind::Authentication,
    ErrorKind::Unsupported,
    ErrorKind::Io,
];

/// `io::Error::from(Error)` then `Error::from` gives the same kind back: it used to come
/// back as `Io` ("I/O error: EOF: the peer closed the connection").
fn io_round_trip_keeps_every_kind() -> TestResult {
    let kinds = ALL_KINDS;
    for kind in kinds {
        let original = Error::with_message(kind, "what happened");
        let back = Error::from(io::Error::from(original));
        assert_eq!(back.kind(), kind);
        assert_eq!(back.to_string(), "what happened");
    }
    // From a real peer: EOF through an io::Result and back.
    let (mut a, b) = Pipe::new()?;
    drop(b);
    let through_io: io::Result<Vec<u8>> = a.recv_bytes().map_err(io::Error::from);
    let err = through_io.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    assert!(Error::from(err).is_eof());
    Ok(())
}

/// A plain OS error comes back as it was, code included (ETIMEDOUT lost its code before);
/// one with context keeps the OS error's kind and the context naming the address.
fn io_round_trip_keeps_os_error_and_context() -> TestResult {
    for errno in [libc::EPIPE, libc::ECONNRESET, libc::ETIMEDOUT, libc::EBADF] {
        let os = io::Error::from_raw_os_error(errno);
        let text = os.to_string();
        let ours = Error::from(os);
        assert_eq!(ours.raw_os_error(), Some(errno));
        // Its text once: not "broken pipe: Broken pipe (os error 32)".
        assert_eq!(ours.to_string(), text);
        let back = io::Error::from(ours);
        assert_eq!(back.raw_os_error(), Some(errno), "{back:?}");
        assert_eq!(back.to_string(), text);
    }

    let path = "/nonexistent-multiproc-dir/socket";
    let err = Client::connect(path, None).unwrap_err();
    assert_eq!(
        (err.kind(), err.raw_os_error()),
        (ErrorKind::Io, Some(libc::ENOENT))
    );
    assert_eq!(
        err.to_string(),
        format!(
            "cannot connect to {path}: {}",
            io::Error::from_raw_os_error(libc::ENOENT)
        )
    );
    let source = err.source().ok_or("no source")?;
    assert_eq!(
        source
            .downcast_ref::<io::Error>()
            .and_then(io::Error::raw_os_error),
        Some(libc::ENOENT)
    );
    let as_io = io::Error::from(err);
    assert_eq!(as_io.kind(), io::ErrorKind::NotFound);
    // The path used to be dropped on the way (io::Error::from_raw_os_error).
    assert!(as_io.to_string().contains(path), "{as_io}");
    let back = Error::from(as_io);
    assert_eq!(
        (back.kind(), back.raw_os_error()),
        (ErrorKind::Io, Some(libc::ENOENT))
    );

    // A peer gone while writing, through `?` into io::Result: EPIPE as std would say it.
    let (mut a, b) = Pipe::new()?;
    drop(b);
    let err = io::Error::from(a.send_bytes(b"x").unwrap_err());
    assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
    assert_eq!(err.raw_os_error(), Some(libc::EPIPE));
    Ok(())
}

/// Display is never empty: not for a message of "" nor an io::Error with no text.
fn display_never_empty() -> TestResult {
    assert_eq!(
        Error::with_message(ErrorKind::Closed, "").to_string(),
        "handle is closed"
    );
    let empty = Error::from(io::Error::other(""));
    assert!(!empty.to_string().is_empty());
    // And no word twice: an io::Error saying "timed out" was "timed out: timed out".
    let timed_out = Error::from(io::Error::new(io::ErrorKind::TimedOut, "timed out"));
    assert_eq!(
        (timed_out.kind(), timed_out.to_string().as_str()),
        (ErrorKind::Timeout, "timed out")
    );
    Ok(())
}

/// Fills its connection's queue (the peer does not read) and closes it, from the callback
/// `when` names: `on_message`, `on_timer`, or `on_backpressure` after `on_message` filled it.
struct ClosesWithOutputQueued {
    errors: Rc<RefCell<Vec<ErrorKind>>>,
    when: &'static str,
}

impl ClosesWithOutputQueued {
    fn fill(ctx: &mut Context<'_>) {
        let chunk = vec![7u8; 64 * 1024];
        for _ in 0..64 {
            ctx.send_bytes(&chunk).unwrap();
        }
        assert!(ctx.connection().pending_send_len() > 0, "nothing queued");
    }
}

impl Handler for ClosesWithOutputQueued {
    fn on_message(&mut self, ctx: &mut Context<'_>, _: &[u8]) {
        Self::fill(ctx);
        if self.when == "message" {
            ctx.connection().close();
        }
    }
    fn on_timer(&mut self, ctx: &mut Context<'_>, _: TimerId) {
        Self::fill(ctx);
        ctx.connection().close();
    }
    fn on_backpressure(&mut self, ctx: &mut Context<'_>, engaged: bool) {
        if engaged && self.when == "backpressure" {
            assert!(ctx.connection().pending_send_len() > 0, "nothing queued");
            ctx.connection().close();
        }
    }
    fn on_error(&mut self, _: &mut Context<'_>, error: Error) {
        self.errors.borrow_mut().push(error.kind());
    }
}

/// A handler that closes its connection with output queued hears one `on_error` (Closed),
/// and `run` returns: the flush of the closed connection neither reports it a second time
/// nor keeps it registered.
fn a_handler_closing_with_output_queued_hears_one_closed() -> TestResult {
    for when in ["message", "timer", "backpressure"] {
        let errors = Rc::new(RefCell::new(Vec::new()));
        let (mut peer, conn) = Pipe::new()?;
        let mut reactor = Reactor::new()?;
        reactor.set_high_water(1024);
        let handler = ClosesWithOutputQueued {
            errors: Rc::clone(&errors),
            when,
        };
        let token = reactor.register(conn, handler)?;
        if when == "timer" {
            reactor.set_timer(token, SHORT)?;
        } else {
            peer.send_bytes(b"go")?;
        }
        reactor.run()?;
        assert!(reactor.is_empty(), "{when}");
        assert_eq!(*errors.borrow(), [ErrorKind::Closed], "{when}");
        drop(peer);
    }
    Ok(())
}

/// The Display of every error in `err`'s source chain, itself first.
fn chain(err: &(dyn StdError + 'static)) -> Vec<String> {
    let mut texts = vec![err.to_string()];
    let mut next = err.source();
    while let Some(e) = next {
        texts.push(e.to_string());
        next = e.source();
    }
    texts
}

/// What a round trip must keep: kind, OS code, text and the texts of the source chain.
fn facts(err: &Error) -> (ErrorKind, Option<i32>, Vec<String>) {
    (err.kind(), err.raw_os_error(), chain(err))
}

/// `Error` → `io::Error` → `Error` keeps kind, OS code, Display and source chain: for every
/// kind with its default message, a message, an empty one, and real errors with OS and codec
/// sources, with and without context.
fn io_round_trips_keep_kind_code_text_and_chain() -> TestResult {
    let kinds = ALL_KINDS;
    let mut errors = Vec::new();
    for kind in kinds {
        errors.push(Error::new(kind));
        errors.push(Error::with_message(kind, "what happened"));
        errors.push(Error::with_message(kind, ""));
    }
    for errno in [libc::EPIPE, libc::ECONNRESET, libc::ETIMEDOUT, libc::EBADF] {
        errors.push(Error::from(io::Error::from_raw_os_error(errno)));
    }
    errors.push(Error::from(io::Error::from(io::ErrorKind::TimedOut)));
    errors.push(Client::connect("/nonexistent-multiproc-dir/socket", None).unwrap_err());
    errors.push(Client::connect("127.0.0.1:1", None).unwrap_err());
    errors.push(Client::connect("", None).unwrap_err());
    let taken = Listener::bind("127.0.0.1:0", None)?;
    errors.push(Listener::bind(taken.local_addr().clone(), None).unwrap_err());
    let (mut a, b) = Pipe::new()?;
    drop(b);
    errors.push(a.send_bytes(b"x").unwrap_err());
    errors.push(a.recv_bytes().unwrap_err());
    let (mut a, mut b) = Pipe::new()?;
    a.send_bytes(&[0xff])?;
    errors.push(b.recv::<u32>().unwrap_err());
    let mut missing = Process::command(multiproc::Command::new("/nonexistent-multiproc/prog"));
    errors.push(missing.start().unwrap_err());
    for original in errors {
        let before = facts(&original);
        let debug = format!("{original:?}");
        let as_io = io::Error::from(original);
        // Its io::Error says what ours said.
        assert_eq!(as_io.to_string(), before.2[0], "{debug}");
        let back = Error::from(as_io);
        assert_eq!(facts(&back), before, "{debug}");
    }
    Ok(())
}

/// An OS error given context ("cannot connect to ...") and passed on as an `io::Error`
/// keeps the OS error's own `io::ErrorKind`, ECONNRESET's and ETIMEDOUT's included, and
/// its code in its source (`raw_os_error` itself is `None`: an `io::Error` holds either a
/// code or an error of ours).
fn io_error_with_context_keeps_the_os_kind_and_code() -> TestResult {
    let refused = io::Error::from(Client::connect("127.0.0.1:1", None).unwrap_err());
    assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused);
    assert!(refused.to_string().contains("127.0.0.1:1"), "{refused}");
    assert_eq!(refused.raw_os_error(), None);
    let code = refused
        .source()
        .and_then(|s| s.downcast_ref::<io::Error>())
        .and_then(io::Error::raw_os_error);
    assert_eq!(code, Some(libc::ECONNREFUSED));
    Ok(())
}

tests_main!(
    connection_kinds,
    queue_kinds,
    process_kinds,
    listener_and_reactor_kinds,
    io_round_trip_keeps_every_kind,
    io_round_trip_keeps_os_error_and_context,
    display_never_empty,
    a_handler_closing_with_output_queued_hears_one_closed,
    io_round_trips_keep_kind_code_text_and_chain,
    io_error_with_context_keeps_the_os_kind_and_code,
);
