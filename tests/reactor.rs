//! The Reactor with real processes and real fds: timers, coalesced sends, backpressure,
//! EOF and errors delivered once, posted tasks, and an idle loop that uses no CPU.

mod util;

use std::cell::{Cell, RefCell};
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::Duration;

use multiproc::{Context, Error, ErrorKind, Handler, Pipe, Process, Reactor, TimerId, WatchId};
use util::TestResult;

/// What a handler saw, shared with the test through an `Rc` (the reactor runs here).
#[derive(Default, Debug)]
struct Log {
    messages: Vec<Vec<u8>>,
    timers: Vec<TimerId>,
    eofs: usize,
    errors: Vec<ErrorKind>,
    backpressure: Vec<bool>,
    drained: usize,
}

struct Recorder {
    log: Rc<RefCell<Log>>,
    stop_after_messages: Option<usize>,
    stop_on_eof: bool,
}

impl Recorder {
    fn new(log: &Rc<RefCell<Log>>) -> Recorder {
        Recorder {
            log: Rc::clone(log),
            stop_after_messages: None,
            stop_on_eof: true,
        }
    }
}

impl Handler for Recorder {
    fn on_message(&mut self, ctx: &mut Context<'_>, message: &[u8]) {
        let mut log = self.log.borrow_mut();
        log.messages.push(message.to_vec());
        if Some(log.messages.len()) == self.stop_after_messages {
            ctx.stop();
        }
    }
    fn on_eof(&mut self, ctx: &mut Context<'_>) {
        self.log.borrow_mut().eofs += 1;
        if self.stop_on_eof {
            ctx.stop();
        }
    }
    fn on_error(&mut self, ctx: &mut Context<'_>, error: Error) {
        self.log.borrow_mut().errors.push(error.kind());
        ctx.stop();
    }
    fn on_timer(&mut self, _: &mut Context<'_>, timer: TimerId) {
        self.log.borrow_mut().timers.push(timer);
    }
}

/// CPU time this thread has used, in nanoseconds (`/proc/thread-self/schedstat`).
fn cpu_ns() -> Result<u64, Box<dyn std::error::Error>> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat")?;
    Ok(text
        .split_whitespace()
        .next()
        .ok_or("empty schedstat")?
        .parse()?)
}

fn timers_fire_in_order_and_a_cancelled_one_never_fires() -> TestResult {
    let log = Rc::new(RefCell::new(Log::default()));
    let (_peer, conn) = Pipe::new()?;
    let mut reactor = Reactor::new()?;
    let token = reactor.register(conn, Recorder::new(&log))?;
    let ms = Duration::from_millis;
    let third = reactor.set_timer(token, ms(30))?;
    let first = reactor.set_timer(token, ms(10))?;
    let cancelled = reactor.set_timer(token, ms(20))?;
    let second = reactor.set_timer(token, ms(20))?;
    assert!(reactor.cancel_timer(cancelled));
    while log.borrow().timers.len() < 3 {
        reactor.run_once(Some(Duration::from_secs(5)))?;
    }
    // One more round past the cancelled deadline: still nothing from it.
    reactor.run_once(Some(ms(30)))?;
    assert_eq!(log.borrow().timers, [first, second, third]);
    Ok(())
}

fn messages_from_a_child_arrive_in_order_then_eof_once() -> TestResult {
    let log = Rc::new(RefCell::new(Log::default()));
    let (mut tx, rx) = Pipe::new()?;
    let mut child = Process::fork(move || {
        for i in 0..10_000u32 {
            tx.send_bytes(&i.to_be_bytes()).unwrap();
        }
    });
    let mut reactor = Reactor::new()?;
    reactor.register(rx, Recorder::new(&log))?;
    child.start()?;
    reactor.run()?;
    assert_eq!(child.join()?, 0);
    let log = log.borrow();
    assert_eq!(log.messages.len(), 10_000);
    for (i, m) in log.messages.iter().enumerate() {
        assert_eq!(m[..], (i as u32).to_be_bytes());
    }
    assert_eq!(log.eofs, 1);
    assert!(reactor.is_empty(), "the connection is removed after EOF");
    Ok(())
}

/// Replies to every message with `burst` messages, all queued in one callback.
struct Burst(usize);

impl Handler for Burst {
    fn on_message(&mut self, ctx: &mut Context<'_>, _: &[u8]) {
        for i in 0..self.0 {
            ctx.send(&(i as u64)).unwrap();
        }
    }
    fn on_eof(&mut self, ctx: &mut Context<'_>) {
        ctx.stop();
    }
}

fn sends_queued_in_one_callback_all_arrive_in_order() -> TestResult {
    let (mut parent, child_end) = Pipe::new()?;
    let mut reactor = Reactor::new()?;
    reactor.register(child_end, Burst(500))?;
    let mut child = Process::fork(move || {
        parent.send_bytes(b"go").unwrap();
        for i in 0..500u64 {
            assert_eq!(parent.recv::<u64>().unwrap(), i);
        }
    });
    child.start()?;
    reactor.run()?;
    assert_eq!(child.join()?, 0);
    Ok(())
}

/// Floods its peer on a timer until told to stop, recording backpressure.
struct Flood {
    log: Rc<RefCell<Log>>,
    chunk: Vec<u8>,
}

impl Handler for Flood {
    fn on_message(&mut self, _: &mut Context<'_>, _: &[u8]) {}
    fn on_timer(&mut self, ctx: &mut Context<'_>, _: TimerId) {
        // 1 MiB at once: far past the 128 KiB high-water mark, and more than the socket
        // buffer takes, so the queue stays above the low-water mark until the peer reads.
        for _ in 0..64 {
            ctx.send_bytes(&self.chunk).unwrap();
        }
    }
    fn on_backpressure(&mut self, ctx: &mut Context<'_>, engaged: bool) {
        self.log.borrow_mut().backpressure.push(engaged);
        if !engaged {
            let _ = ctx.send_bytes(b"done");
        }
    }
    fn on_drained(&mut self, ctx: &mut Context<'_>) {
        let mut log = self.log.borrow_mut();
        log.drained += 1;
        if log.backpressure == [true, false] {
            ctx.stop();
        }
    }
}

fn backpressure_engages_and_releases() -> TestResult {
    let log = Rc::new(RefCell::new(Log::default()));
    let (mut parent, child_end) = Pipe::new()?;
    let mut reactor = Reactor::new()?;
    reactor.set_high_water(128 * 1024);
    let token = reactor.register(
        child_end,
        Flood {
            log: Rc::clone(&log),
            chunk: vec![9; 16 * 1024],
        },
    )?;
    reactor.set_timer(token, Duration::ZERO)?;
    // Queue up to the high-water mark before the reader exists.
    while log.borrow().backpressure.is_empty() {
        reactor.run_once(Some(Duration::from_secs(5)))?;
    }
    assert_eq!(log.borrow().backpressure, [true]);
    let mut reader = Process::fork(move || {
        loop {
            let m = parent.recv_bytes().unwrap();
            if m == b"done" {
                break;
            }
            assert_eq!(m.len(), 16 * 1024);
        }
    });
    reader.start()?;
    reactor.run()?;
    assert_eq!(reader.join()?, 0);
    let log = log.borrow();
    assert_eq!(log.backpressure, [true, false]);
    assert!(log.drained >= 1);
    Ok(())
}

fn peer_killed_mid_frame_is_one_error_and_no_spin() -> TestResult {
    use std::io::Write;
    use std::os::fd::OwnedFd;
    let log = Rc::new(RefCell::new(Log::default()));
    let (tx, rx) = Pipe::new()?;
    let (mut ready_tx, mut ready_rx) = Pipe::new()?;
    let mut child = Process::fork(move || {
        let mut raw = std::fs::File::from(OwnedFd::from(tx));
        raw.write_all(&1000u32.to_be_bytes()).unwrap();
        raw.write_all(b"partial").unwrap();
        ready_tx.send_bytes(b"written").unwrap();
        loop {
            std::thread::park();
        }
    });
    child.start()?;
    assert_eq!(ready_rx.recv_bytes()?, b"written");
    let mut reactor = Reactor::new()?;
    let mut rec = Recorder::new(&log);
    rec.stop_on_eof = false;
    let token = reactor.register(rx, rec)?;
    reactor.run_once(Some(Duration::from_millis(10)))?;
    assert!(log.borrow().messages.is_empty() && log.borrow().errors.is_empty());
    child.kill()?;
    child.join()?;
    reactor.run()?; // stops in on_error
    assert_eq!(log.borrow().errors, [ErrorKind::TruncatedMessage]);
    assert!(
        reactor.deregister(token).is_none(),
        "removed after the error"
    );
    // Nothing left to report: a further second of rounds finds nothing, without spinning.
    let before = cpu_ns()?;
    let (_keep, idle) = Pipe::new()?;
    let idle_token = reactor.register(idle, Recorder::new(&log))?;
    reactor.set_timer(idle_token, Duration::from_millis(200))?;
    while log.borrow().timers.is_empty() {
        reactor.run_once(None)?;
    }
    let used = cpu_ns()? - before;
    assert_eq!(log.borrow().errors.len(), 1);
    assert!(used < 20_000_000, "reactor used {used} ns of CPU in 200 ms");
    Ok(())
}

fn an_idle_reactor_uses_no_cpu() -> TestResult {
    let log = Rc::new(RefCell::new(Log::default()));
    let (_peer, conn) = Pipe::new()?;
    let mut reactor = Reactor::new()?;
    let token = reactor.register(conn, Recorder::new(&log))?;
    reactor.run_once(Some(Duration::ZERO))?;
    let before = cpu_ns()?;
    reactor.set_timer(token, Duration::from_millis(200))?;
    while log.borrow().timers.is_empty() {
        reactor.run_once(None)?;
    }
    let used = cpu_ns()? - before;
    assert!(
        used < 20_000_000,
        "idle reactor used {used} ns of CPU in 200 ms"
    );
    Ok(())
}

fn a_posted_task_wakes_and_stops_the_loop() -> TestResult {
    let log = Rc::new(RefCell::new(Log::default()));
    let (_peer, conn) = Pipe::new()?;
    let mut reactor = Reactor::new()?;
    reactor.register(conn, Recorder::new(&log))?;
    let handle = reactor.handle();
    // Threads are fine here: nothing forks after this point.
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let poster = std::thread::spawn(move || {
        go_rx.recv().unwrap();
        handle.post(|r| r.stop());
    });
    reactor.run_once(Some(Duration::ZERO))?;
    go_tx.send(())?;
    reactor.run()?;
    poster.join().map_err(|_| "poster panicked")?;
    Ok(())
}

/// A `ReactorHandle` keeps `run` going; dropping the last one ends it, even when it is
/// dropped while the reactor waits with nothing else that could wake it: the drop wakes it
/// to see that nothing is left.
fn dropping_the_last_handle_ends_the_wait_and_run() -> TestResult {
    const HANG: Duration = Duration::from_secs(10);
    let mut reactor = Reactor::new()?;
    let handle = reactor.handle();
    // Threads are fine here: nothing forks after this point. Whether the drop comes before
    // the wait or during it, it must end it; without a wake-up the wait lasts its whole
    // timeout (and `run`'s, having none, for ever).
    let dropper = std::thread::spawn(move || drop(handle));
    let start = std::time::Instant::now();
    reactor.run_once(Some(HANG))?;
    let waited = start.elapsed();
    dropper.join().map_err(|_| "dropper panicked")?;
    assert!(
        waited < HANG,
        "a reactor whose last handle was dropped waited its whole {HANG:?}"
    );
    reactor.run()?; // nothing left: returns at once
    Ok(())
}

fn run_returns_when_nothing_is_left() -> TestResult {
    let mut reactor = Reactor::new()?;
    reactor.run()?;
    let log = Rc::new(RefCell::new(Log::default()));
    let (tx, rx) = Pipe::new()?;
    let mut rec = Recorder::new(&log);
    rec.stop_on_eof = false;
    reactor.register(rx, rec)?;
    drop(tx);
    reactor.run()?; // EOF removes the only connection; then nothing can wake it
    assert_eq!(log.borrow().eofs, 1);
    Ok(())
}

/// Closes its connection, or puts another in its place, from a timer callback.
struct DropsItsConnection {
    log: Rc<RefCell<Log>>,
    how: Drops,
}

#[derive(Clone, Copy, Debug)]
enum Drops {
    Close,
    Replace,
    /// Close, then put another in its place: on the fd number just freed.
    Reconnect,
}

impl Handler for DropsItsConnection {
    fn on_message(&mut self, _: &mut Context<'_>, _: &[u8]) {}
    fn on_timer(&mut self, ctx: &mut Context<'_>, _: TimerId) {
        match self.how {
            Drops::Close => ctx.connection().close(),
            Drops::Replace => *ctx.connection() = Pipe::new().unwrap().0,
            Drops::Reconnect => {
                let old = ctx.connection().as_raw_fd();
                ctx.connection().close();
                *ctx.connection() = Pipe::new().unwrap().0;
                assert_eq!(ctx.connection().as_raw_fd(), old, "not the same number");
            }
        }
    }
    fn on_error(&mut self, _: &mut Context<'_>, error: Error) {
        self.log.borrow_mut().errors.push(error.kind());
    }
}

/// A connection closed (or swapped) through `Context::connection` outside `on_message` is
/// one `on_error` and gone: its fd left epoll, so no event would ever remove it, and `run`
/// would wait for it forever.
fn a_connection_closed_by_its_handler_is_removed() -> TestResult {
    for (how, kind) in [
        (Drops::Close, ErrorKind::Closed),
        (Drops::Replace, ErrorKind::InvalidInput),
        (Drops::Reconnect, ErrorKind::InvalidInput),
    ] {
        let log = Rc::new(RefCell::new(Log::default()));
        let (_peer, conn) = Pipe::new()?;
        let mut reactor = Reactor::new()?;
        let token = reactor.register(
            conn,
            DropsItsConnection {
                log: Rc::clone(&log),
                how,
            },
        )?;
        reactor.set_timer(token, Duration::from_millis(1))?;
        util::run_until_empty(&mut reactor, 1000, Duration::from_secs(1))?;
        assert!(reactor.is_empty(), "{how:?}: still registered");
        assert_eq!(log.borrow().errors, [kind], "{how:?}");
        reactor.run()?; // nothing left: returns at once
    }
    Ok(())
}

/// A watch that was due at once (its source had a frame buffered) and was cancelled leaves
/// nothing behind that fires the watch set next in its place.
fn a_cancelled_due_watch_does_not_fire_its_successor() -> TestResult {
    let (mut a, mut b) = Pipe::new()?;
    a.send_bytes(b"one")?;
    a.send_bytes(b"two")?;
    assert_eq!(b.recv_bytes()?, b"one");
    assert!(b.buffered_len() > 0, "\"two\" should sit in user space");
    let mut reactor = Reactor::new()?;
    let first = reactor.when_ready(b, |_, _| {})?;
    assert!(reactor.cancel_watch(first));
    let (_silent_peer, silent) = Pipe::new()?;
    let fired = Rc::new(Cell::new(false));
    let f = Rc::clone(&fired);
    reactor.when_ready(silent, move |_, _| f.set(true))?;
    reactor.run_once(Some(Duration::from_millis(20)))?;
    assert!(!fired.get(), "a watch on a silent source fired");
    Ok(())
}

/// Two watches ready in one round: whichever fires first cancels the other and sets a
/// watch on a silent source, which takes the cancelled one's slot. The event already
/// collected for the cancelled one must not fire the new one.
fn an_event_of_a_cancelled_watch_does_not_fire_a_new_one() -> TestResult {
    let (mut a1, b1) = Pipe::new()?;
    let (mut a2, b2) = Pipe::new()?;
    a1.send_bytes(b"x")?;
    a2.send_bytes(b"x")?;
    let mut reactor = Reactor::new()?;
    let ids: Rc<RefCell<Vec<WatchId>>> = Rc::new(RefCell::new(Vec::new()));
    let spurious = Rc::new(Cell::new(false));
    let peers = Rc::new(RefCell::new(Vec::new()));
    for (n, b) in [b1, b2].into_iter().enumerate() {
        let (ids2, spurious, peers) = (Rc::clone(&ids), Rc::clone(&spurious), Rc::clone(&peers));
        let id = reactor.when_ready(b, move |reactor, _| {
            let other = ids2.borrow()[1 - n];
            if reactor.cancel_watch(other) {
                let (peer, silent) = Pipe::new().unwrap();
                peers.borrow_mut().push(peer);
                let spurious = Rc::clone(&spurious);
                reactor
                    .when_ready(silent, move |_, _| spurious.set(true))
                    .unwrap();
            }
        })?;
        ids.borrow_mut().push(id);
    }
    reactor.run_once(Some(Duration::from_millis(20)))?;
    assert!(!spurious.get(), "a watch fired on a stale event");
    Ok(())
}

/// Refills its queue every time it drains: an endless producer.
struct Producer {
    sent: u64,
}

impl Handler for Producer {
    fn on_message(&mut self, _: &mut Context<'_>, _: &[u8]) {}
    fn on_timer(&mut self, ctx: &mut Context<'_>, _: TimerId) {
        self.on_drained(ctx);
    }
    fn on_drained(&mut self, ctx: &mut Context<'_>) {
        for _ in 0..64 {
            ctx.send_bytes(&self.sent.to_be_bytes()).unwrap();
            self.sent += 1;
        }
    }
}

fn an_endless_producer_does_not_starve_other_connections() -> TestResult {
    let log = Rc::new(RefCell::new(Log::default()));
    let (mut sink, producer_end) = Pipe::new()?;
    let (mut tx, rx) = Pipe::new()?;
    // The reader checks the flood, then speaks on a second connection while the flood goes
    // on; the reactor must hear it. (It ends on a count, not EOF: a forked child holds
    // copies of every fd the parent had, the producer's end included.)
    let mut reader = Process::fork(move || {
        for expected in 0..5_000u64 {
            assert_eq!(sink.recv_bytes().unwrap(), expected.to_be_bytes());
        }
        tx.send_bytes(b"heard despite the flood").unwrap();
    });
    reader.start()?;
    let mut reactor = Reactor::new()?;
    let producer = reactor.register(producer_end, Producer { sent: 0 })?;
    reactor.set_timer(producer, Duration::ZERO)?;
    let mut rec = Recorder::new(&log);
    rec.stop_after_messages = Some(1);
    reactor.register(rx, rec)?;
    reactor.run()?; // the recorder stops the loop once it hears its message
    assert_eq!(log.borrow().messages, [b"heard despite the flood".to_vec()]);
    assert_eq!(reader.join()?, 0);
    Ok(())
}

/// Restarts a child from its exit watch until `left` reaches zero.
fn restart_on_exit(reactor: &mut Reactor, exits: Rc<RefCell<Vec<i32>>>, left: u32) -> TestResult {
    let mut p = Process::fork(move || std::process::exit(left as i32));
    p.start()?;
    let sentinel = p.sentinel()?;
    reactor.when_ready(sentinel, move |reactor, _sentinel| {
        exits
            .borrow_mut()
            .push(p.join().expect("join after the sentinel fired"));
        if left > 1 {
            restart_on_exit(reactor, exits, left - 1).expect("restart");
        }
    })?;
    Ok(())
}

fn a_sentinel_watch_fires_once_per_exit_and_may_restart_the_child() -> TestResult {
    let mut reactor = Reactor::new()?;
    let exits = Rc::new(RefCell::new(Vec::new()));
    restart_on_exit(&mut reactor, Rc::clone(&exits), 4)?;
    // run() returns when no watch is left: after the fourth exit.
    reactor.run()?;
    assert_eq!(*exits.borrow(), [4, 3, 2, 1]);
    Ok(())
}

fn a_sentinel_watch_does_not_fire_while_the_child_runs() -> TestResult {
    let (mut parent, mut child) = Pipe::new()?;
    let mut p = Process::fork(move || {
        let _ = child.recv_bytes();
    });
    p.start()?;
    let mut reactor = Reactor::new()?;
    let fired = Rc::new(RefCell::new(false));
    let seen = Rc::clone(&fired);
    reactor.when_ready(p.sentinel()?, move |_, _| *seen.borrow_mut() = true)?;
    // Messages flow while the child lives; the watch stays quiet.
    let log = Rc::new(RefCell::new(Log::default()));
    let (mut peer, conn) = Pipe::new()?;
    let mut recorder = Recorder::new(&log);
    recorder.stop_after_messages = Some(1);
    reactor.register(conn, recorder)?;
    peer.send_bytes(b"tick")?;
    reactor.run()?;
    assert_eq!(log.borrow().messages, [b"tick".to_vec()]);
    assert!(
        !*fired.borrow(),
        "the watch fired while the child was running"
    );
    parent.send_bytes(b"exit")?;
    drop(peer); // the connection's EOF stops the loop; run again until the watch fires
    while !*fired.borrow() {
        reactor.run_once(Some(Duration::from_secs(30)))?;
    }
    assert_eq!(p.join_timeout(Duration::ZERO)?, 0);
    Ok(())
}

tests_main!(
    a_duplex_end_whose_peer_resets_hears_its_last_message_then_one_ending,
    a_duplex_end_with_output_queued_whose_peer_resets_hears_its_last_message_then_one_ending,
    a_paused_end_whose_peer_leaves_hears_its_last_messages_then_one_error,
    an_idle_write_only_end_whose_reader_leaves_hears_one_error_and_nothing_else,
    an_idle_write_only_end_does_not_spin,
    panics_in_on_timer_and_on_drained_lose_no_other_timer_or_notice,
    panicking_watches_and_tasks_lose_no_other,
    a_paused_write_only_end_ends_when_its_reader_leaves,
    a_closing_write_only_end_ends_when_its_reader_leaves,
    a_paused_duplex_end_ends_when_its_peer_leaves,
    a_closing_duplex_end_ends_when_its_peer_leaves,
    a_write_only_end_with_a_send_queued_gets_one_error_when_its_reader_leaves,
    a_handler_removes_a_connection_whose_event_is_pending,
    forwarding_to_a_peer_that_never_reads_is_bounded,
    a_panicking_handler_loses_no_event_of_the_others,
    a_write_only_connection_can_be_registered_to_send,
    an_endless_producer_does_not_starve_other_connections,
    timers_fire_in_order_and_a_cancelled_one_never_fires,
    messages_from_a_child_arrive_in_order_then_eof_once,
    sends_queued_in_one_callback_all_arrive_in_order,
    backpressure_engages_and_releases,
    peer_killed_mid_frame_is_one_error_and_no_spin,
    an_idle_reactor_uses_no_cpu,
    a_posted_task_wakes_and_stops_the_loop,
    run_returns_when_nothing_is_left,
    dropping_the_last_handle_ends_the_wait_and_run,
    a_connection_closed_by_its_handler_is_removed,
    a_cancelled_due_watch_does_not_fire_its_successor,
    an_event_of_a_cancelled_watch_does_not_fire_a_new_one,
    a_sentinel_watch_fires_once_per_exit_and_may_restart_the_child,
    a_sentinel_watch_does_not_fire_while_the_child_runs,
);

// ---- review probes ----

/// Panics on the message "boom", records the rest.
struct Bomb {
    log: Rc<RefCell<Log>>,
}

impl Handler for Bomb {
    fn on_message(&mut self, _: &mut Context<'_>, message: &[u8]) {
        if message == b"boom" {
            panic!("handler blew up");
        }
        self.log.borrow_mut().messages.push(message.to_vec());
    }
}

fn a_panicking_handler_loses_no_event_of_the_others() -> TestResult {
    let log = Rc::new(RefCell::new(Log::default()));
    let other = Rc::new(RefCell::new(Log::default()));
    let mut reactor = Reactor::new()?;
    let (mut bomb_peer, bomb_end) = Pipe::new()?;
    let (mut peer, conn) = Pipe::new()?;
    let bomb = reactor.register(
        bomb_end,
        Bomb {
            log: Rc::clone(&log),
        },
    )?;
    reactor.register(conn, Recorder::new(&other))?;
    // Registration rounds: nothing to read yet.
    reactor.run_once(Some(Duration::ZERO))?;
    bomb_peer.send_bytes(b"boom")?;
    peer.send_bytes(b"after")?;
    // A task posted before the round: its wake-up is consumed by the round that panics.
    let task_ran = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ran = std::sync::Arc::clone(&task_ran);
    reactor
        .handle()
        .post(move |_| ran.store(true, std::sync::atomic::Ordering::SeqCst));
    // Both fds are readable before the round; the bomb (lower index) goes first.
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        reactor.run_once(Some(Duration::from_secs(5)))
    }));
    std::panic::set_hook(prev);
    assert!(caught.is_err(), "the panic propagates out of run_once");
    // The panicking connection is gone, and the other one's message is still delivered.
    assert_eq!(reactor.len(), 1, "the panicking connection is removed");
    assert!(reactor.deregister(bomb).is_none());
    let _ = &mut bomb_peer;
    for _ in 0..3 {
        if !other.borrow().messages.is_empty() {
            break;
        }
        reactor.run_once(Some(Duration::from_millis(200)))?;
    }
    assert_eq!(other.borrow().messages, [b"after".to_vec()]);
    assert!(
        task_ran.load(std::sync::atomic::Ordering::SeqCst),
        "the posted task was lost"
    );
    // Nothing of the panicking connection is left to keep `run` going.
    drop(peer);
    reactor.run()?;
    assert!(reactor.is_empty());
    Ok(())
}

/// Sends one message when its timer fires.
struct SendOnTimer(Rc<RefCell<Log>>);

impl Handler for SendOnTimer {
    fn on_message(&mut self, _: &mut Context<'_>, _: &[u8]) {}
    fn on_timer(&mut self, ctx: &mut Context<'_>, _: TimerId) {
        ctx.send_bytes(b"from a writer").unwrap();
    }
    fn on_error(&mut self, ctx: &mut Context<'_>, error: Error) {
        self.0.borrow_mut().errors.push(error.kind());
        ctx.stop();
    }
}

fn a_write_only_connection_can_be_registered_to_send() -> TestResult {
    let log = Rc::new(RefCell::new(Log::default()));
    let (mut r, w) = Pipe::half_duplex()?;
    let fds_before = util::open_fds().len();
    let mut reactor = Reactor::new()?;
    let token = reactor.register(w, SendOnTimer(Rc::clone(&log)))?;
    reactor.set_timer(token, Duration::from_millis(1))?;
    while !r.poll(Some(Duration::ZERO))? {
        reactor.run_once(Some(Duration::from_secs(5)))?;
    }
    assert_eq!(
        log.borrow().errors,
        [],
        "a write-only end was ended at registration"
    );
    assert_eq!(r.recv_bytes()?, b"from a writer");
    // The reader goes: one error, the connection removed, its fd closed, no spinning.
    drop(r);
    let before = cpu_ns()?;
    reactor.run()?;
    assert!(cpu_ns()? - before < 20_000_000);
    assert_eq!(log.borrow().errors, [ErrorKind::BrokenPipe]);
    assert!(reactor.is_empty());
    drop(reactor);
    assert_eq!(util::open_fds().len(), fds_before - 2);
    Ok(())
}

/// Removes another connection on its first message.
struct Remover {
    victim: Rc<Cell<Option<multiproc::Token>>>,
    removed: Rc<RefCell<Option<multiproc::Connection>>>,
}

impl Handler for Remover {
    fn on_message(&mut self, ctx: &mut Context<'_>, _: &[u8]) {
        assert!(ctx.deregister(ctx.token()).is_none(), "not its own");
        let victim = self.victim.get().unwrap();
        *self.removed.borrow_mut() = ctx.deregister(victim);
        ctx.stop();
    }
}

fn a_handler_removes_a_connection_whose_event_is_pending() -> TestResult {
    let log = Rc::new(RefCell::new(Log::default()));
    let removed = Rc::new(RefCell::new(None));
    let victim = Rc::new(Cell::new(None));
    let mut reactor = Reactor::new()?;
    let (mut a_peer, a) = Pipe::new()?;
    let (mut b_peer, b) = Pipe::new()?;
    // The remover gets the lower index: read first in a round.
    reactor.register(
        a,
        Remover {
            victim: Rc::clone(&victim),
            removed: Rc::clone(&removed),
        },
    )?;
    victim.set(Some(reactor.register(b, Recorder::new(&log))?));
    reactor.run_once(Some(Duration::ZERO))?;
    b_peer.send_bytes(b"for b")?;
    a_peer.send_bytes(b"remove b")?;
    // Both writes are in their pipes now: one epoll_wait reports both, a's read first.
    reactor.run()?;
    assert!(
        log.borrow().messages.is_empty(),
        "a removed connection's handler ran"
    );
    let mut b = removed.borrow_mut().take().ok_or("not handed back")?;
    assert_eq!(
        b.recv_bytes()?,
        b"for b",
        "its message stays for the new owner"
    );
    assert_eq!(reactor.len(), 1);
    Ok(())
}
/// Forwards every message to another connection; records how much that one holds.
struct Forwarder {
    to: multiproc::Token,
    refused: Rc<Cell<usize>>,
}

impl Handler for Forwarder {
    fn on_message(&mut self, ctx: &mut Context<'_>, message: &[u8]) {
        if let Err(e) = ctx.send_bytes_to(self.to, message) {
            assert_eq!(e.kind(), ErrorKind::Full);
            self.refused.set(self.refused.get() + 1);
        }
    }
}

fn forwarding_to_a_peer_that_never_reads_is_bounded() -> TestResult {
    let mut reactor = Reactor::new()?;
    reactor.set_high_water(64 * 1024);
    let (_slow_peer, slow_end) = Pipe::new()?; // never read
    let log = Rc::new(RefCell::new(Log::default()));
    let slow = reactor.register(slow_end, Recorder::new(&log))?;
    let (mut src, src_end) = Pipe::new()?;
    let refused = Rc::new(Cell::new(0));
    reactor.register(
        src_end,
        Forwarder {
            to: slow,
            refused: Rc::clone(&refused),
        },
    )?;
    let chunk = vec![1u8; 16 * 1024];
    // 8 MiB through the forwarder: with the slow side's queue unbounded, all of it would
    // sit in memory.
    for _ in 0..512 {
        while src.try_send_bytes(&chunk).is_err() {
            reactor.run_once(Some(Duration::from_millis(100)))?;
        }
        src.flush()?;
        reactor.run_once(Some(Duration::ZERO))?;
    }
    while !src.flush()? {
        reactor.run_once(Some(Duration::from_millis(100)))?;
    }
    for _ in 0..10 {
        reactor.run_once(Some(Duration::ZERO))?;
    }
    let held = reactor.deregister(slow).unwrap().pending_send_len();
    assert!(
        held <= 1 << 20,
        "{held} bytes queued for a peer that never reads"
    );
    assert!(refused.get() > 0);
    Ok(())
}

// ---- review r2a probes ----

/// Fills its write-only (or any) connection past the high-water mark when its timer fires,
/// optionally closing it then; records errors.
struct FloodOnce {
    log: Rc<RefCell<Log>>,
    bytes: usize,
    close: bool,
}

impl Handler for FloodOnce {
    fn on_message(&mut self, _: &mut Context<'_>, _: &[u8]) {}
    fn on_timer(&mut self, ctx: &mut Context<'_>, _: TimerId) {
        let chunk = vec![7u8; 16 * 1024];
        for _ in 0..self.bytes / chunk.len() {
            ctx.send_bytes(&chunk).unwrap();
        }
        if self.close {
            ctx.close();
        }
    }
    fn on_backpressure(&mut self, _: &mut Context<'_>, engaged: bool) {
        self.log.borrow_mut().backpressure.push(engaged);
    }
    fn on_error(&mut self, _: &mut Context<'_>, error: Error) {
        self.log.borrow_mut().errors.push(error.kind());
    }
    fn on_eof(&mut self, _: &mut Context<'_>) {
        self.log.borrow_mut().eofs += 1;
    }
}

/// Registers `end` with a `FloodOnce` handler, queues 512 KiB (64 KiB high-water mark) that
/// the reader never reads, then drops the reader: the connection must end with one error
/// and leave the reactor, within a few rounds.
fn flood_then_reader_leaves(
    peer: multiproc::Connection,
    end: multiproc::Connection,
    close: bool,
) -> TestResult {
    let log = Rc::new(RefCell::new(Log::default()));
    let mut reactor = Reactor::new()?;
    reactor.set_high_water(64 * 1024);
    let token = reactor.register(
        end,
        FloodOnce {
            log: Rc::clone(&log),
            bytes: 512 * 1024,
            close,
        },
    )?;
    reactor.set_timer(token, Duration::ZERO)?;
    // The timer round queues everything; the flush fills the pipe.
    for _ in 0..3 {
        reactor.run_once(Some(Duration::ZERO))?;
    }
    if !close {
        assert_eq!(log.borrow().backpressure, [true], "paused");
    }
    assert_eq!(reactor.len(), 1);
    drop(peer);
    util::run_until_empty(&mut reactor, 5, Duration::from_millis(200))?;
    assert!(
        reactor.is_empty(),
        "the connection whose reader left stays registered (run() would never return); log: {:?}",
        log.borrow()
    );
    if !close {
        assert_eq!(log.borrow().errors, [ErrorKind::BrokenPipe]);
    }
    Ok(())
}

fn a_paused_write_only_end_ends_when_its_reader_leaves() -> TestResult {
    let (r, w) = Pipe::half_duplex()?;
    flood_then_reader_leaves(r, w, false)
}

fn a_closing_write_only_end_ends_when_its_reader_leaves() -> TestResult {
    let (r, w) = Pipe::half_duplex()?;
    flood_then_reader_leaves(r, w, true)
}

fn a_paused_duplex_end_ends_when_its_peer_leaves() -> TestResult {
    let (a, b) = Pipe::new()?;
    flood_then_reader_leaves(a, b, false)
}

fn a_closing_duplex_end_ends_when_its_peer_leaves() -> TestResult {
    let (a, b) = Pipe::new()?;
    flood_then_reader_leaves(a, b, true)
}

/// Queues one message when its timer fires; records errors.
struct QueueOne(Rc<RefCell<Log>>);

impl Handler for QueueOne {
    fn on_message(&mut self, _: &mut Context<'_>, _: &[u8]) {}
    fn on_timer(&mut self, ctx: &mut Context<'_>, _: TimerId) {
        ctx.send_bytes(&vec![1u8; 100 * 1024]).unwrap();
    }
    fn on_error(&mut self, _: &mut Context<'_>, error: Error) {
        self.0.borrow_mut().errors.push(error.kind());
    }
}

fn a_write_only_end_with_a_send_queued_gets_one_error_when_its_reader_leaves() -> TestResult {
    let log = Rc::new(RefCell::new(Log::default()));
    let (r, w) = Pipe::half_duplex()?;
    let mut reactor = Reactor::new()?;
    // Under the mark: not paused, but more than the pipe holds stays queued.
    reactor.set_high_water(1 << 20);
    let token = reactor.register(w, QueueOne(Rc::clone(&log)))?;
    reactor.set_timer(token, Duration::ZERO)?;
    for _ in 0..3 {
        reactor.run_once(Some(Duration::ZERO))?;
    }
    drop(r);
    let before = cpu_ns()?;
    reactor.run()?;
    assert!(cpu_ns()? - before < 50_000_000);
    assert_eq!(log.borrow().errors, [ErrorKind::BrokenPipe]);
    Ok(())
}

/// Sends one message on its timer; panics in `on_timer` or `on_drained` if told to; records
/// what it heard.
struct Touchy {
    log: Rc<RefCell<Log>>,
    panic_on_timer: bool,
    panic_on_drained: bool,
}

impl Handler for Touchy {
    fn on_message(&mut self, _: &mut Context<'_>, _: &[u8]) {}
    fn on_timer(&mut self, ctx: &mut Context<'_>, id: TimerId) {
        if self.panic_on_timer {
            panic!("timer handler blew up");
        }
        self.log.borrow_mut().timers.push(id);
        ctx.send_bytes(b"tick").unwrap();
    }
    fn on_drained(&mut self, _: &mut Context<'_>) {
        if self.panic_on_drained {
            panic!("drained handler blew up");
        }
        self.log.borrow_mut().drained += 1;
    }
}

/// Runs `f` with the panic message hook silenced; whether it panicked.
fn panics(f: impl FnOnce()) -> bool {
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    std::panic::set_hook(prev);
    caught.is_err()
}

fn panics_in_on_timer_and_on_drained_lose_no_other_timer_or_notice() -> TestResult {
    for (panic_on_timer, panic_on_drained) in [(true, false), (false, true)] {
        let bad = Rc::new(RefCell::new(Log::default()));
        let good = Rc::new(RefCell::new(Log::default()));
        let mut reactor = Reactor::new()?;
        let (_bad_peer, bad_end) = Pipe::new()?;
        let (mut good_peer, good_end) = Pipe::new()?;
        // The bad one first: lower index, earlier timer.
        let b = reactor.register(
            bad_end,
            Touchy {
                log: Rc::clone(&bad),
                panic_on_timer,
                panic_on_drained,
            },
        )?;
        let g = reactor.register(
            good_end,
            Touchy {
                log: Rc::clone(&good),
                panic_on_timer: false,
                panic_on_drained: false,
            },
        )?;
        reactor.set_timer(b, Duration::ZERO)?;
        reactor.set_timer(g, Duration::ZERO)?;
        assert!(panics(|| {
            let _ = reactor.run_once(Some(Duration::ZERO));
        }));
        assert_eq!(reactor.len(), 1, "the panicking connection is removed");
        for _ in 0..3 {
            reactor.run_once(Some(Duration::ZERO))?;
        }
        assert_eq!(
            good.borrow().timers.len(),
            1,
            "{panic_on_timer} {panic_on_drained}"
        );
        assert_eq!(
            good.borrow().drained,
            1,
            "{panic_on_timer} {panic_on_drained}"
        );
        assert_eq!(good_peer.recv_bytes()?, b"tick");
        drop(good_peer);
        reactor.run()?;
        assert!(reactor.is_empty());
    }
    Ok(())
}

/// A panicking watch callback and a panicking posted task: the other watches and tasks of
/// the round still run, once each, in the next round.
fn panicking_watches_and_tasks_lose_no_other() -> TestResult {
    let mut reactor = Reactor::new()?;
    let fired = Rc::new(Cell::new(0));
    let mut keep = Vec::new();
    for i in 0..3 {
        let (mut tx, rx) = Pipe::new()?;
        tx.send_bytes(b"ready")?;
        keep.push(tx);
        let fired = Rc::clone(&fired);
        reactor.when_ready(rx, move |_, _| {
            if i == 0 {
                panic!("watch blew up");
            }
            fired.set(fired.get() + 1);
        })?;
    }
    let ran = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let handle = reactor.handle();
    for i in 0..3 {
        let ran = std::sync::Arc::clone(&ran);
        handle.post(move |_| {
            if i == 0 {
                panic!("task blew up");
            }
            ran.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        });
    }
    drop(handle);
    // The first round panics in the first watch, the next in the first task.
    let mut panicked = 0;
    for _ in 0..4 {
        if panics(|| {
            reactor.run_once(Some(Duration::ZERO)).unwrap();
        }) {
            panicked += 1;
        }
    }
    assert_eq!(panicked, 2);
    assert_eq!(fired.get(), 2);
    assert_eq!(ran.load(std::sync::atomic::Ordering::SeqCst), 2);
    reactor.run()?;
    Ok(())
}

/// A registered write-only end whose reader is still there, idle and after a send that
/// filled the pipe: a 200 ms wait uses no CPU and makes one round.
fn an_idle_write_only_end_does_not_spin() -> TestResult {
    let log = Rc::new(RefCell::new(Log::default()));
    let (mut r, w) = Pipe::half_duplex()?;
    let mut reactor = Reactor::new()?;
    reactor.set_high_water(1 << 20);
    let token = reactor.register(w, QueueOne(Rc::clone(&log)))?;
    reactor.run_once(Some(Duration::ZERO))?;
    let before = cpu_ns()?;
    let started = std::time::Instant::now();
    reactor.run_once(Some(Duration::from_millis(200)))?;
    assert!(
        started.elapsed() >= Duration::from_millis(190),
        "woke early"
    );
    assert!(cpu_ns()? - before < 20_000_000);
    // Now with 100 KiB queued past the pipe's 64 KiB, unread.
    reactor.set_timer(token, Duration::ZERO)?;
    for _ in 0..3 {
        reactor.run_once(Some(Duration::ZERO))?;
    }
    let before = cpu_ns()?;
    let started = std::time::Instant::now();
    reactor.run_once(Some(Duration::from_millis(200)))?;
    assert!(
        started.elapsed() >= Duration::from_millis(190),
        "woke early"
    );
    assert!(cpu_ns()? - before < 20_000_000);
    // The reader takes it all, the reactor writing the rest as the pipe empties.
    let reader = std::thread::spawn(move || (r.recv_bytes().map(|m| m.len()), r));
    while !reader.is_finished() {
        reactor.run_once(Some(Duration::from_millis(50)))?;
    }
    let (got, _r) = reader.join().unwrap();
    assert_eq!(got?, 100 * 1024);
    assert_eq!(log.borrow().errors, []);
    Ok(())
}

/// Counts every callback; queues `queue` bytes when its timer fires.
struct EveryCallback {
    log: Rc<RefCell<Log>>,
    queue: usize,
}

impl Handler for EveryCallback {
    fn on_message(&mut self, _: &mut Context<'_>, message: &[u8]) {
        self.log.borrow_mut().messages.push(message.to_vec());
    }
    fn on_eof(&mut self, _: &mut Context<'_>) {
        self.log.borrow_mut().eofs += 1;
    }
    fn on_error(&mut self, _: &mut Context<'_>, error: Error) {
        self.log.borrow_mut().errors.push(error.kind());
    }
    fn on_backpressure(&mut self, _: &mut Context<'_>, engaged: bool) {
        self.log.borrow_mut().backpressure.push(engaged);
    }
    fn on_drained(&mut self, _: &mut Context<'_>) {
        self.log.borrow_mut().drained += 1;
    }
    fn on_timer(&mut self, ctx: &mut Context<'_>, _: TimerId) {
        let chunk = vec![3u8; 16 * 1024];
        for _ in 0..self.queue / chunk.len() {
            ctx.send_bytes(&chunk).unwrap();
        }
    }
}

/// The peer of a registered duplex end sends a last message and closes with data of ours
/// unread (an error event, `ECONNRESET`, as well as a hang-up): now that an error event
/// also flushes, the last message must still come first, then exactly one ending, and
/// nothing about output (there was none, or it cannot drain).
fn peer_resets_after_a_last_message(queue: usize) -> TestResult {
    let log = Rc::new(RefCell::new(Log::default()));
    let (mut a, mut b) = Pipe::new()?;
    // Unread by `a` when it closes: the reset.
    b.send_bytes(b"unread")?;
    let mut reactor = Reactor::new()?;
    reactor.set_high_water(64 << 20);
    let token = reactor.register(
        b,
        EveryCallback {
            log: Rc::clone(&log),
            queue,
        },
    )?;
    if queue > 0 {
        reactor.set_timer(token, Duration::ZERO)?;
        for _ in 0..3 {
            reactor.run_once(Some(Duration::ZERO))?;
        }
    }
    a.send_bytes(b"last")?;
    drop(a);
    util::run_until_empty(&mut reactor, 5, Duration::from_secs(5))?;
    let log = log.borrow();
    assert!(reactor.is_empty(), "still registered; {log:?}");
    assert_eq!(log.messages, [b"last".to_vec()], "{log:?}");
    assert_eq!(log.eofs + log.errors.len(), 1, "{log:?}");
    assert_eq!(log.drained, 0, "{log:?}");
    assert!(log.backpressure.is_empty(), "{log:?}");
    Ok(())
}

fn a_duplex_end_whose_peer_resets_hears_its_last_message_then_one_ending() -> TestResult {
    peer_resets_after_a_last_message(0)
}

fn a_duplex_end_with_output_queued_whose_peer_resets_hears_its_last_message_then_one_ending()
-> TestResult {
    peer_resets_after_a_last_message(4 << 20)
}

/// A paused end (its output past the high-water mark, so not read) whose peer sends a last
/// message and leaves without reading: the flush fails (`BrokenPipe`), and the messages the
/// peer sent before leaving are handed over first, then the one `on_error`. They were lost.
fn a_paused_end_whose_peer_leaves_hears_its_last_messages_then_one_error() -> TestResult {
    let log = Rc::new(RefCell::new(Log::default()));
    let (mut a, b) = Pipe::new()?;
    let mut reactor = Reactor::new()?;
    reactor.set_high_water(64 * 1024);
    let token = reactor.register(
        b,
        EveryCallback {
            log: Rc::clone(&log),
            queue: 1 << 20,
        },
    )?;
    reactor.set_timer(token, Duration::ZERO)?;
    while log.borrow().backpressure.is_empty() {
        reactor.run_once(Some(Duration::from_secs(5)))?;
    }
    assert_eq!(log.borrow().backpressure, [true]);
    a.send_bytes(b"one")?;
    a.send_bytes(b"last")?;
    drop(a);
    util::run_until_empty(&mut reactor, 5, Duration::from_secs(5))?;
    let log = log.borrow();
    assert!(reactor.is_empty(), "still registered; {log:?}");
    assert_eq!(log.messages, [b"one".to_vec(), b"last".to_vec()], "{log:?}");
    assert_eq!(log.errors, [ErrorKind::BrokenPipe], "{log:?}");
    assert_eq!(log.eofs, 0, "{log:?}");
    Ok(())
}

/// An idle write-only end (nothing queued) whose reader leaves: an error event, now marked
/// for flushing too. One `on_error`, no `on_drained` or `on_backpressure`.
fn an_idle_write_only_end_whose_reader_leaves_hears_one_error_and_nothing_else() -> TestResult {
    let log = Rc::new(RefCell::new(Log::default()));
    let (r, w) = Pipe::half_duplex()?;
    let mut reactor = Reactor::new()?;
    reactor.register(
        w,
        EveryCallback {
            log: Rc::clone(&log),
            queue: 0,
        },
    )?;
    reactor.run_once(Some(Duration::ZERO))?;
    drop(r);
    reactor.run()?;
    let log = log.borrow();
    assert_eq!(log.errors, [ErrorKind::BrokenPipe], "{log:?}");
    assert_eq!((log.eofs, log.drained), (0, 0), "{log:?}");
    assert!(log.backpressure.is_empty(), "{log:?}");
    Ok(())
}
