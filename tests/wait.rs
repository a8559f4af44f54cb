//! `wait()` and `WaitSet`: level-triggered readiness over connections and raw fds, with
//! real processes and real fds.

mod util;

use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use multiproc::{Connection, ErrorKind, Pipe, Process, WaitSet, Waitable, wait};
use util::TestResult;

const FIVE_S: Option<Duration> = Some(Duration::from_secs(5));

fn wait_reports_ready_idle_and_eof_together() -> TestResult {
    let (mut tx0, rx0) = Pipe::new()?;
    let (_tx1, rx1) = Pipe::new()?;
    let (tx2, rx2) = Pipe::new()?;
    let mut rxs = [rx0, rx1, rx2];
    assert!(wait(&mut rxs, Some(Duration::ZERO))?.is_empty());
    tx0.send_bytes(b"data")?;
    drop(tx2);
    assert_eq!(wait(&mut rxs, FIVE_S)?, [0, 2]);
    assert_eq!(rxs[0].recv_bytes()?, b"data");
    assert_eq!(rxs[2].recv_bytes().unwrap_err().kind(), ErrorKind::Eof);
    // EOF stays ready (a recv would not block); the drained one does not.
    assert_eq!(wait(&mut rxs, Some(Duration::ZERO))?, [2]);
    Ok(())
}

fn wait_counts_a_frame_already_in_user_space() -> TestResult {
    let (mut tx, rx) = Pipe::new()?;
    tx.send_bytes(b"one")?;
    tx.send_bytes(b"two")?;
    let mut rxs = [rx];
    assert_eq!(rxs[0].recv_bytes()?, b"one");
    // "two" was read along with "one": the fd itself has nothing left.
    let fd_readable = rxs[0].as_fd().is_ready();
    assert!(!fd_readable, "the fd should be drained");
    assert!(rxs[0].buffered_len() > 0);
    assert_eq!(wait(&mut rxs, Some(Duration::ZERO))?, [0]);
    let mut set = WaitSet::new()?;
    let [rx] = rxs;
    let key = set.insert(rx)?;
    assert_eq!(set.wait(Some(Duration::ZERO))?, [key]);
    assert_eq!(set.get_mut(key).unwrap().recv_bytes()?, b"two");
    assert!(set.wait(Some(Duration::ZERO))?.is_empty());
    Ok(())
}

fn raw_writer(conn: Connection) -> std::fs::File {
    std::fs::File::from(OwnedFd::from(conn))
}

fn an_incomplete_frame_is_not_ready() -> TestResult {
    let (tx, rx) = Pipe::new()?;
    let mut raw = raw_writer(tx);
    raw.write_all(&10u32.to_be_bytes())?;
    raw.write_all(b"01234")?;
    let mut rxs = [rx];
    assert!(wait(&mut rxs, Some(Duration::from_millis(20)))?.is_empty());
    let mut set = WaitSet::new()?;
    let [rx] = rxs;
    let key = set.insert(rx)?;
    assert!(set.wait(Some(Duration::from_millis(20)))?.is_empty());
    raw.write_all(b"56789")?;
    assert_eq!(set.wait(FIVE_S)?, [key]);
    assert_eq!(
        set.get_mut(key).unwrap().try_recv_bytes()?.unwrap(),
        b"0123456789"
    );
    Ok(())
}

fn try_recv_keeps_a_partial_frame_across_calls() -> TestResult {
    let (mut rx, tx) = Pipe::half_duplex()?;
    let mut raw = raw_writer(tx);
    let payload: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
    let mut frame = (payload.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&payload);
    let mut got = None;
    for chunk in frame.chunks(4093) {
        assert!(got.is_none(), "frame yielded before its last byte");
        raw.write_all(chunk)?;
        got = rx.try_recv_bytes()?;
    }
    assert_eq!(got.as_deref(), Some(&payload[..]));
    assert_eq!(rx.try_recv_bytes()?, None);
    drop(raw);
    assert_eq!(rx.try_recv_bytes().unwrap_err().kind(), ErrorKind::Eof);
    Ok(())
}

fn wait_set_holds_4000_connections_and_finds_the_one_ready() -> TestResult {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let want = 8_300;
    if limit.current.is_some_and(|c| c < want) {
        let hard = limit.maximum;
        if hard.is_some_and(|h| h < want) {
            fail!("RLIMIT_NOFILE hard limit {hard:?} is below {want}");
        }
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(want),
                maximum: hard,
            },
        )?;
    }
    let mut set = WaitSet::new()?;
    let mut senders = Vec::new();
    let mut keys = Vec::new();
    for _ in 0..4000 {
        let (tx, rx) = Pipe::new()?;
        keys.push(set.insert(rx)?);
        senders.push(tx);
    }
    assert_eq!(set.len(), 4000);
    assert!(set.wait(Some(Duration::ZERO))?.is_empty());
    for i in [3999, 0, 1234] {
        senders[i].send(&i)?;
        assert_eq!(set.wait(FIVE_S)?, [keys[i]]);
        assert_eq!(set.get_mut(keys[i]).unwrap().recv::<usize>()?, i);
    }
    Ok(())
}

fn wait_set_allows_add_and_remove_while_handling_keys() -> TestResult {
    let mut set = WaitSet::new()?;
    let mut senders = Vec::new();
    let mut keys = Vec::new();
    for _ in 0..6 {
        let (tx, rx) = Pipe::new()?;
        keys.push(set.insert(rx)?);
        senders.push(tx);
    }
    for tx in &mut senders {
        tx.send_bytes(b"x")?;
    }
    let ready = set.wait(FIVE_S)?;
    assert_eq!(ready, keys);
    let mut fresh = Vec::new();
    for key in ready {
        // Remove odd positions (and, early, one whose key is still to come in this batch);
        // add a new connection with a message each time, so slots get reused mid-batch.
        match set.get_mut(key) {
            None => assert_eq!(key, keys[4], "only the removed key finds nothing"),
            Some(_) if key.index() % 2 == 1 => assert!(set.remove(key).is_some()),
            Some(conn) => assert_eq!(conn.recv_bytes()?, b"x"),
        }
        if key == keys[0] {
            assert!(set.remove(keys[4]).is_some());
        }
        let (mut tx, rx) = Pipe::new()?;
        tx.send_bytes(b"new")?;
        fresh.push(set.insert(rx)?);
        senders.push(tx);
    }
    assert_eq!(set.len(), 2 + 6);
    let mut ready = set.wait(FIVE_S)?;
    ready.sort();
    fresh.sort();
    assert_eq!(ready, fresh);
    for key in ready {
        assert_eq!(set.get_mut(key).unwrap().recv_bytes()?, b"new");
    }
    assert!(set.wait(Some(Duration::ZERO))?.is_empty());
    Ok(())
}

fn wait_set_is_level_triggered() -> TestResult {
    let (mut tx, rx) = Pipe::new()?;
    let mut set = WaitSet::new()?;
    let key = set.insert(rx)?;
    tx.send_bytes(b"left unread")?;
    for _ in 0..3 {
        assert_eq!(set.wait(FIVE_S)?, [key]);
    }
    set.get_mut(key).unwrap().recv_bytes()?;
    assert!(set.wait(Some(Duration::ZERO))?.is_empty());
    Ok(())
}

fn peer_killed_mid_frame_is_truncated_once_and_never_spins() -> TestResult {
    let (mut parent, child) = Pipe::new()?;
    let mut p = Process::fork(move || {
        let mut raw = raw_writer(child);
        raw.write_all(&100u32.to_be_bytes()).unwrap();
        raw.write_all(b"half a frame").unwrap();
        // Block forever; the parent kills us mid-frame.
        loop {
            std::thread::park();
        }
    });
    p.start()?;
    // The partial frame is not a message: nothing is ready until the kill.
    let mut set = WaitSet::new()?;
    assert!(parent.poll(Some(Duration::from_millis(20))).map(|r| !r)?);
    let key = set.insert(parent)?;
    assert!(set.wait(Some(Duration::from_millis(20)))?.is_empty());
    p.kill()?;
    assert_eq!(p.join()?, -libc::SIGKILL);
    assert_eq!(set.wait(FIVE_S)?, [key]);
    let mut conn = set.remove(key).unwrap();
    assert_eq!(
        conn.recv_bytes().unwrap_err().kind(),
        ErrorKind::TruncatedMessage
    );
    assert!(set.wait(Some(Duration::from_millis(20)))?.is_empty());
    Ok(())
}

fn wait_mixes_connections_and_raw_fds() -> TestResult {
    let (_a, mut b) = Pipe::new()?;
    let (r, mut w) = Pipe::half_duplex()?;
    let mut raw = r.as_fd();
    assert!(
        wait(
            &mut [&mut b as &mut dyn Waitable, &mut raw],
            Some(Duration::ZERO)
        )?
        .is_empty()
    );
    w.send_bytes(b"x")?;
    assert_eq!(
        wait(&mut [&mut b as &mut dyn Waitable, &mut raw], FIVE_S)?,
        [1]
    );
    Ok(())
}

fn waiting_on_a_closed_connection_is_an_error() -> TestResult {
    let (_a, mut b) = Pipe::new()?;
    b.close();
    assert_eq!(
        wait(&mut [b], Some(Duration::ZERO)).unwrap_err().kind(),
        ErrorKind::Closed
    );
    let (_c, mut d) = Pipe::new()?;
    d.close();
    assert_eq!(
        WaitSet::new()?.insert(d).unwrap_err().kind(),
        ErrorKind::Closed
    );
    Ok(())
}

/// A wait on nothing with no timeout could never end: an error, not a hang (Python's
/// blocks forever). With a timeout it is a sleep that returns nothing.
fn waiting_forever_on_nothing_is_an_error() -> TestResult {
    for timeout in [None, Some(Duration::MAX)] {
        let err = wait::<Connection>(&mut [], timeout).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "wait, {timeout:?}");
        let err = WaitSet::<Connection>::new()?.wait(timeout).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "WaitSet, {timeout:?}");
    }
    assert!(wait::<Connection>(&mut [], Some(Duration::from_millis(1)))?.is_empty());
    let mut set = WaitSet::<Connection>::new()?;
    assert!(set.wait(Some(Duration::from_millis(1)))?.is_empty());
    // Emptied: the same.
    let (_a, b) = Pipe::new()?;
    let key = set.insert(b)?;
    set.remove(key);
    assert_eq!(set.wait(None).unwrap_err().kind(), ErrorKind::InvalidInput);
    Ok(())
}

fn try_send_queues_then_flush_drains() -> TestResult {
    let (mut a, mut b) = Pipe::new()?;
    a.set_send_buffer_limit(256 * 1024);
    let chunk = vec![7u8; 32 * 1024];
    let mut sent = 0usize;
    let err = loop {
        match a.try_send_bytes(&chunk) {
            Ok(()) => sent += 1,
            Err(e) => break e,
        }
    };
    assert_eq!(err.kind(), ErrorKind::Full);
    assert!(a.pending_send_len() > 0);
    assert!(!a.flush()?);
    // The reader drains; flushing then empties the queue and every message arrives whole.
    let mut received = 0;
    while received < sent {
        if a.pending_send_len() > 0 {
            a.flush()?;
        }
        if let Some(msg) = b.try_recv_bytes()? {
            assert_eq!(msg, chunk);
            received += 1;
        } else {
            b.poll(FIVE_S)?;
        }
    }
    assert!(a.flush()?);
    assert_eq!(a.pending_send_len(), 0);
    Ok(())
}

fn blocking_send_after_try_send_keeps_order() -> TestResult {
    let (mut a, mut b) = Pipe::new()?;
    let big = vec![1u8; 4 << 20];
    a.try_send_bytes(&big)?; // larger than the socket buffer: mostly queued
    assert!(a.pending_send_len() > 0);
    let mut reader = Process::fork(move || {
        assert_eq!(b.recv_bytes().unwrap().len(), 4 << 20);
        assert_eq!(b.recv_bytes().unwrap(), b"after");
    });
    reader.start()?;
    a.send_bytes(b"after")?; // flushes the queue first
    assert_eq!(reader.join()?, 0);
    Ok(())
}

fn try_send_to_a_dead_peer_is_broken_pipe() -> TestResult {
    let (mut a, b) = Pipe::new()?;
    drop(b);
    assert_eq!(
        a.try_send_bytes(b"x").unwrap_err().kind(),
        ErrorKind::BrokenPipe
    );
    let (r, mut w) = Pipe::half_duplex()?;
    drop(r);
    assert_eq!(
        w.try_send_bytes(b"x").unwrap_err().kind(),
        ErrorKind::BrokenPipe
    );
    Ok(())
}

fn recv_timeout_times_out_and_keeps_partial_data() -> TestResult {
    let (tx, mut rx) = Pipe::new()?;
    let mut raw = raw_writer(tx);
    raw.write_all(&3u32.to_be_bytes())?;
    raw.write_all(b"ab")?;
    let err = rx
        .recv_bytes_timeout(Duration::from_millis(20))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    raw.write_all(b"c")?;
    assert_eq!(rx.recv_bytes_timeout(Duration::from_secs(5))?, b"abc");
    Ok(())
}

fn sentinels_wait_beside_connections_and_fire_exactly_at_exit() -> TestResult {
    let (mut parent, mut child) = Pipe::new()?;
    let mut p = Process::fork(move || {
        // Say something, then stay alive until told to exit.
        child.send_bytes(b"alive").unwrap();
        let _ = child.recv_bytes();
    });
    p.start()?;
    let mut set = WaitSet::new()?;
    let exit_key = set.insert(Box::new(p.sentinel()?) as Box<dyn Waitable>)?;
    let (mut other_tx, other_rx) = Pipe::new()?;
    let other_key = set.insert(Box::new(other_rx) as Box<dyn Waitable>)?;
    // The child is alive: its message is ready, its sentinel is not.
    assert!(parent.poll(FIVE_S)?);
    assert_eq!(parent.recv_bytes()?, b"alive");
    assert!(set.wait(Some(Duration::from_millis(20)))?.is_empty());
    other_tx.send_bytes(b"x")?;
    assert_eq!(set.wait(FIVE_S)?, [other_key]);
    parent.send_bytes(b"exit")?;
    let mut seen = set.wait(FIVE_S)?;
    while !seen.contains(&exit_key) {
        seen = set.wait(FIVE_S)?;
    }
    // Ready means exited: the join is immediate.
    assert_eq!(p.join_timeout(Duration::ZERO)?, 0);
    // The free function sees it too, and it stays ready after the reap.
    let mut sentinel = p.sentinel()?;
    assert_eq!(
        wait(
            &mut [&mut sentinel as &mut dyn Waitable, &mut parent],
            Some(Duration::ZERO)
        )?[0],
        0
    );
    Ok(())
}

fn a_killed_child_wakes_its_sentinel() -> TestResult {
    let (_keep, mut child) = Pipe::new()?;
    let mut p = Process::fork(move || {
        let _ = child.recv_bytes();
    });
    p.start()?;
    let mut sentinel = [p.sentinel()?];
    assert!(wait(&mut sentinel, Some(Duration::from_millis(20)))?.is_empty());
    p.kill()?;
    assert_eq!(wait(&mut sentinel, FIVE_S)?, [0]);
    assert_eq!(p.join()?, -libc::SIGKILL);
    Ok(())
}

fn non_blocking_use_never_sets_o_nonblock_on_the_shared_fd() -> TestResult {
    use rustix::fs::{OFlags, fcntl_getfl};
    // O_NONBLOCK belongs to the open file description, shared with every process holding
    // the fd: a forked child or a Python peer would see EAGAIN in its blocking calls.
    let (mut a, b) = Pipe::new()?;
    let (mut r, w) = Pipe::half_duplex()?;
    assert_eq!(a.try_recv_bytes()?, None);
    assert_eq!(r.try_recv_bytes()?, None);
    a.try_send_bytes(b"x")?;
    let mut set = WaitSet::new()?;
    set.insert(b)?;
    set.wait(Some(Duration::ZERO))?;
    let mut reactor = multiproc::Reactor::new()?;
    struct Nop;
    impl multiproc::Handler for Nop {
        fn on_message(&mut self, _: &mut multiproc::Context<'_>, _: &[u8]) {}
    }
    reactor.register(w, Nop)?;
    reactor.run_once(Some(Duration::ZERO))?;
    for fd in [a.as_fd(), r.as_fd()] {
        assert!(!fcntl_getfl(fd)?.contains(OFlags::NONBLOCK));
    }
    // And a child holding the same description blocks in recv as it should.
    let (mut tx, rx) = Pipe::new()?;
    let mut child = Process::fork(move || {
        let mut rx = rx;
        assert!(!fcntl_getfl(rx.as_fd()).unwrap().contains(OFlags::NONBLOCK));
        assert_eq!(rx.recv_bytes().unwrap(), b"late");
    });
    child.start()?;
    tx.send_bytes(b"late")?;
    assert_eq!(child.join()?, 0);
    Ok(())
}

tests_main!(
    mio_connection_drain_rule_loses_nothing,
    mio_queue_drain_rule_loses_nothing,
    mio_listener_with_several_pending_clients,
    mio_sentinel_and_two_polls,
    a_queue_and_its_clone_in_one_wait_set_is_a_typed_error,
    wait_mixes_every_kind,
    non_blocking_use_never_sets_o_nonblock_on_the_shared_fd,
    sentinels_wait_beside_connections_and_fire_exactly_at_exit,
    a_killed_child_wakes_its_sentinel,
    wait_reports_ready_idle_and_eof_together,
    wait_counts_a_frame_already_in_user_space,
    an_incomplete_frame_is_not_ready,
    try_recv_keeps_a_partial_frame_across_calls,
    wait_set_holds_4000_connections_and_finds_the_one_ready,
    wait_set_allows_add_and_remove_while_handling_keys,
    wait_set_is_level_triggered,
    peer_killed_mid_frame_is_truncated_once_and_never_spins,
    wait_mixes_connections_and_raw_fds,
    waiting_on_a_closed_connection_is_an_error,
    waiting_forever_on_nothing_is_an_error,
    try_send_queues_then_flush_drains,
    blocking_send_after_try_send_keeps_order,
    try_send_to_a_dead_peer_is_broken_pipe,
    recv_timeout_times_out_and_keeps_partial_data,
);

// ---- review probes: our types in a user's own (edge-triggered) mio Poll ----

fn ready_tokens(
    poll: &mut mio::Poll,
    events: &mut mio::Events,
    timeout: Duration,
) -> std::io::Result<Vec<mio::Token>> {
    poll.poll(events, Some(timeout))?;
    Ok(events.iter().map(|e| e.token()).collect())
}

fn mio_connection_drain_rule_loses_nothing() -> TestResult {
    use mio::{Events, Interest, Poll, Token};
    let (mut tx, mut rx) = Pipe::new()?;
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(8);
    poll.registry()
        .register(&mut rx, Token(1), Interest::READABLE)?;
    for i in 0..50u32 {
        tx.send(&i)?;
    }
    let big = vec![7u8; 3 << 20];
    tx.try_send_bytes(&big)?; // more than a pipe holds: streams in while we read
    let mut got = Vec::new();
    let mut big_seen = false;
    while !big_seen {
        // The writer pushes more whenever the reader has drained the pipe.
        tx.flush()?;
        let t = ready_tokens(&mut poll, &mut events, Duration::from_secs(5))?;
        assert_eq!(t, [Token(1)], "an event was lost");
        while let Some(m) = rx.try_recv_bytes()? {
            if m.len() == big.len() {
                big_seen = true;
            } else {
                got.push(m);
            }
        }
    }
    assert_eq!(got.len(), 50);
    // A partial frame: the drain leaves it, and the rest raises a new edge.
    let mut raw = raw_writer_dup(&tx)?;
    raw.write_all(&4u32.to_be_bytes())?;
    raw.write_all(b"ab")?;
    assert_eq!(
        ready_tokens(&mut poll, &mut events, Duration::from_secs(5))?,
        [Token(1)]
    );
    assert_eq!(rx.try_recv_bytes()?, None);
    raw.write_all(b"cd")?;
    assert_eq!(
        ready_tokens(&mut poll, &mut events, Duration::from_secs(5))?,
        [Token(1)]
    );
    assert_eq!(rx.try_recv_bytes()?.as_deref(), Some(&b"abcd"[..]));
    // EOF after the drain: one more edge, then Eof.
    drop(raw);
    drop(tx);
    assert_eq!(
        ready_tokens(&mut poll, &mut events, Duration::from_secs(5))?,
        [Token(1)]
    );
    assert!(rx.try_recv_bytes().unwrap_err().is_eof());
    Ok(())
}

fn raw_writer_dup(conn: &Connection) -> std::io::Result<std::fs::File> {
    Ok(std::fs::File::from(conn.as_fd().try_clone_to_owned()?))
}

fn mio_queue_drain_rule_loses_nothing() -> TestResult {
    use mio::{Events, Interest, Poll, Token};
    let mut q = multiproc::Queue::<u32>::new()?;
    let producer = q.clone();
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(8);
    poll.registry()
        .register(&mut q, Token(2), Interest::READABLE)?;
    assert!(ready_tokens(&mut poll, &mut events, Duration::from_millis(10))?.is_empty());
    let mut child = Process::fork(move || {
        for i in 0..300 {
            producer.put(&i).unwrap();
        }
    });
    child.start()?;
    let mut got = Vec::new();
    while got.len() < 300 {
        let t = ready_tokens(&mut poll, &mut events, Duration::from_secs(5))?;
        assert_eq!(t, [Token(2)], "an event was lost after {} items", got.len());
        loop {
            match q.try_get() {
                Ok(v) => got.push(v),
                Err(e) if e.kind() == ErrorKind::Empty => break,
                Err(e) => return Err(e.into()),
            }
        }
    }
    assert_eq!(got, (0..300).collect::<Vec<_>>());
    assert_eq!(child.join()?, 0);
    Ok(())
}

fn mio_listener_with_several_pending_clients() -> TestResult {
    use mio::{Events, Interest, Poll, Token};
    let key = b"secret";
    let mut listener = multiproc::Listener::bind("127.0.0.1:0", Some(key))?;
    let addr = listener.local_addr().clone();
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(8);
    poll.registry()
        .register(&mut listener, Token(3), Interest::READABLE)?;
    let mut children = Vec::new();
    for i in 0..4u8 {
        let addr = addr.clone();
        let mut c = Process::fork(move || {
            let mut conn = multiproc::Client::connect(addr, Some(b"secret")).unwrap();
            conn.send_bytes(&[i]).unwrap();
            let _ = conn.recv_bytes();
        });
        c.start()?;
        children.push(c);
    }
    let mut accepted = Vec::new();
    while accepted.len() < 4 {
        let t = ready_tokens(&mut poll, &mut events, Duration::from_secs(5))?;
        assert_eq!(
            t,
            [Token(3)],
            "an event was lost after {} accepts",
            accepted.len()
        );
        while let Some(conn) = listener.try_accept()? {
            accepted.push(conn);
        }
    }
    drop(accepted);
    for c in children {
        assert_eq!(c.join()?, 0);
    }
    Ok(())
}

fn mio_sentinel_and_two_polls() -> TestResult {
    use mio::{Events, Interest, Poll, Token};
    let (mut keep, mut child_end) = Pipe::new()?;
    let mut p = Process::fork(move || {
        let _ = child_end.recv_bytes();
    });
    p.start()?;
    let mut s = p.sentinel()?;
    let mut poll1 = Poll::new()?;
    let mut poll2 = Poll::new()?;
    let mut events = Events::with_capacity(8);
    poll1
        .registry()
        .register(&mut s, Token(4), Interest::READABLE)?;
    poll2
        .registry()
        .register(&mut s, Token(5), Interest::READABLE)?;
    assert!(ready_tokens(&mut poll1, &mut events, Duration::from_millis(10))?.is_empty());
    keep.send_bytes(b"exit")?;
    assert_eq!(
        ready_tokens(&mut poll1, &mut events, Duration::from_secs(5))?,
        [Token(4)]
    );
    assert_eq!(
        ready_tokens(&mut poll2, &mut events, Duration::from_secs(5))?,
        [Token(5)]
    );
    poll1.registry().deregister(&mut s)?;
    poll2
        .registry()
        .reregister(&mut s, Token(6), Interest::READABLE)?;
    assert_eq!(
        ready_tokens(&mut poll2, &mut events, Duration::from_secs(5))?,
        [Token(6)]
    );
    assert_eq!(p.join()?, 0);
    Ok(())
}

fn a_queue_and_its_clone_in_one_wait_set_is_a_typed_error() -> TestResult {
    let q = multiproc::Queue::<u32>::new()?;
    let mut set = WaitSet::new()?;
    let a = set.insert(q.clone())?;
    // One fd under both handles: a typed error that says so, not a bare EEXIST.
    let err = set.insert(q.clone()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert!(err.to_string().contains("registered here already"), "{err}");
    q.put(&1)?;
    assert_eq!(set.wait(FIVE_S)?, [a]);
    Ok(())
}

fn wait_mixes_every_kind() -> TestResult {
    let (mut tx, mut rx) = Pipe::new()?;
    let q = multiproc::Queue::<u32>::new()?;
    let mut q2 = q.clone();
    let mut listener = multiproc::Listener::bind("127.0.0.1:0", None)?;
    let (mut keep, mut child_end) = Pipe::new()?;
    let mut p = Process::fork(move || {
        let _ = child_end.recv_bytes();
    });
    p.start()?;
    let mut s = p.sentinel()?;
    let mut q1 = q.clone();
    macro_rules! objs {
        () => {
            [
                &mut rx as &mut dyn Waitable,
                &mut s,
                &mut q1,
                &mut listener,
                &mut q2,
            ]
        };
    }
    assert!(wait(&mut objs!(), Some(Duration::ZERO))?.is_empty());
    q.put(&5)?;
    assert_eq!(wait(&mut objs!(), FIVE_S)?, [2, 4], "the same queue twice");
    assert_eq!(q.try_get()?, 5);
    assert!(wait(&mut objs!(), Some(Duration::ZERO))?.is_empty());
    tx.send_bytes(b"x")?;
    assert_eq!(wait(&mut objs!(), Some(Duration::MAX))?, [0]);
    rx.recv_bytes()?;
    let _client = multiproc::Client::connect(listener.local_addr().clone(), None)?;
    assert_eq!(wait(&mut objs!(), FIVE_S)?, [3]);
    assert!(listener.try_accept()?.is_some());
    keep.send_bytes(b"exit")?;
    assert_eq!(wait(&mut objs!(), FIVE_S)?, [1]);
    p.join()?;
    listener.close();
    let err = wait(&mut objs!(), FIVE_S).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Closed);
    Ok(())
}
