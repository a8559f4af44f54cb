//! Blocking `Connection` calls interrupted by a signal whose handler was installed without
//! `SA_RESTART` (so every blocking syscall fails with `EINTR`): they must carry on (PEP 475)
//! and deliver every message whole, once. Here, not under `tests/`, because installing the
//! handler and aiming signals at threads take `unsafe`.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;

use crate::{Connection, Pipe};

static DELIVERED: AtomicUsize = AtomicUsize::new(0);

extern "C" fn count_signal(_: libc::c_int) {
    DELIVERED.fetch_add(1, Ordering::Relaxed);
}

/// Installs `count_signal` for SIGUSR1 without `SA_RESTART`.
fn install_handler() {
    // SAFETY: a zeroed `sigaction` is a valid starting value; every field used is set below.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = count_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    action.sa_flags = 0; // no SA_RESTART: blocking syscalls fail with EINTR
    // SAFETY: `sa_mask` is a valid sigset to initialise.
    unsafe { libc::sigemptyset(&mut action.sa_mask) };
    // SAFETY: valid signal number and action; the handler only touches an atomic, which is
    // async-signal-safe. No other test in this crate uses SIGUSR1.
    let rc = unsafe { libc::sigaction(libc::SIGUSR1, &action, std::ptr::null_mut()) };
    assert_eq!(rc, 0, "sigaction failed");
}

fn pattern(len: usize, seed: u32) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8) ^ ((i >> 8) as u8).wrapping_mul(31) ^ (seed as u8))
        .collect()
}

/// One side's rounds: `send_first` sends a big message then waits for the echo of its
/// length; the other side polls, receives and answers.
fn rounds(conn: &mut Connection, out: Option<&mut Connection>, send_first: bool, n: u32) {
    let mut out = out;
    for round in 0..n {
        let len = 64 * 1024 + (round as usize * 7919) % (512 * 1024);
        if send_first {
            let w = out.as_deref_mut().unwrap_or(conn);
            w.send_bytes(&pattern(len, round)).unwrap();
            assert!(conn.poll(None).unwrap());
            let echo: u64 = conn.recv().unwrap();
            assert_eq!(echo, len as u64, "round {round}");
        } else {
            assert!(conn.poll(None).unwrap());
            let got = conn.recv_bytes().unwrap();
            assert!(got == pattern(len, round), "round {round}: message damaged");
            let w = out.as_deref_mut().unwrap_or(conn);
            w.send(&(got.len() as u64)).unwrap();
        }
    }
}

/// One side on its own thread: reports its id, runs its rounds, says so, then waits to be
/// released.
fn side(
    conn: &mut Connection,
    out: Option<&mut Connection>,
    first: bool,
    release: mpsc::Receiver<()>,
    tid_tx: mpsc::Sender<libc::pthread_t>,
    done_tx: mpsc::Sender<()>,
) {
    // SAFETY: `pthread_self` is always safe to call.
    tid_tx.send(unsafe { libc::pthread_self() }).unwrap();
    rounds(conn, out, first, ROUNDS);
    done_tx.send(()).unwrap();
    // Stay alive until the signaller has stopped: a signal must never be aimed at a thread
    // that has exited.
    release.recv().unwrap();
}

const ROUNDS: u32 = 150;

/// Runs the two sides on two threads while a third sends both SIGUSR1 again and again.
fn under_signals(
    mut a: Connection,
    mut a_out: Option<Connection>,
    mut b: Connection,
    mut b_out: Option<Connection>,
) {
    install_handler();
    let stop = AtomicBool::new(false);
    let before = DELIVERED.load(Ordering::Relaxed);
    std::thread::scope(|s| {
        let (tid_tx, tid_rx) = mpsc::channel::<libc::pthread_t>();
        let (release_a_tx, release_a_rx) = mpsc::channel::<()>();
        let (release_b_tx, release_b_rx) = mpsc::channel::<()>();
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let (t1, d1) = (tid_tx.clone(), done_tx.clone());
        let (a, a_out, b, b_out) = (&mut a, a_out.as_mut(), &mut b, b_out.as_mut());
        let ha = s.spawn(move || side(a, a_out, true, release_a_rx, t1, d1));
        let hb = s.spawn(move || side(b, b_out, false, release_b_rx, tid_tx, done_tx));
        let tids = [tid_rx.recv().unwrap(), tid_rx.recv().unwrap()];
        let stop = &stop;
        let signaller = s.spawn(move || {
            let mut sent = 0usize;
            while !stop.load(Ordering::Relaxed) {
                for &tid in &tids {
                    // SAFETY: both threads stay alive until this loop has stopped (they
                    // wait for their release), so `tid` names a live thread.
                    let rc = unsafe { libc::pthread_kill(tid, libc::SIGUSR1) };
                    assert_eq!(rc, 0);
                    sent += 1;
                }
                // Let each signal land before the next, so they do not merge.
                while DELIVERED.load(Ordering::Relaxed) - before < sent
                    && !stop.load(Ordering::Relaxed)
                {
                    std::thread::yield_now();
                }
            }
            sent
        });
        done_rx.recv().unwrap();
        done_rx.recv().unwrap();
        stop.store(true, Ordering::Relaxed);
        let sent = signaller.join().unwrap();
        release_a_tx.send(()).unwrap();
        release_b_tx.send(()).unwrap();
        ha.join().unwrap();
        hb.join().unwrap();
        assert!(sent > 100, "only {sent} signals sent");
    });
}

#[test]
fn duplex_calls_survive_signals_without_sa_restart() {
    let (a, b) = Pipe::new().unwrap();
    under_signals(a, None, b, None);
}

#[test]
fn half_duplex_calls_survive_signals_without_sa_restart() {
    let (b_in, a_out) = Pipe::half_duplex().unwrap();
    let (a_in, b_out) = Pipe::half_duplex().unwrap();
    under_signals(a_in, Some(a_out), b_in, Some(b_out));
}
