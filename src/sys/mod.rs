//! The operating system, behind safe functions. The only module allowed `unsafe`.
//!
//! # Contract
//!
//! Every function exported from here is safe to call: the `unsafe` block is inside it, with a
//! `// SAFETY:` comment saying why the call is sound, and whatever it returns is already owned
//! and typed (`OwnedFd`, `Pid`, a length already checked against the buffer). Where rustix
//! wraps a call safely we use rustix and this module is glue; `libc` appears only for what
//! rustix does not offer safely (`fork`, `_exit`, `sigaction`).
//!
//! - [`fd`]: reading into a `Vec`'s spare capacity, vectored writes that never raise
//!   SIGPIPE, readiness polls with a deadline, what kind of file an fd is.
//! - [`socket`]: the `AF_UNIX` socketpair behind a duplex `Pipe`.
//! - [`unix_diag`]: which socket files have a listening socket (`NETLINK_SOCK_DIAG`).
//! - [`process`]: `fork`, exit of a forked child, pidfds, `waitid`, signals.
//! - [`light_mutex`]: the queue's producer lock, unlocked by a plain store.
//! - [`sleepers`]: the sleep and wake-one protocol of the queue and its lock, on a futex
//!   word and a sleepers flag in shared memory.
//!
//! Every call retries `EINTR` itself, so callers never see it.
//!
//! Linux is the first platform; the pidfd paths fall back to plain `waitpid` where
//! `pidfd_open(2)` is missing. `shm` (the queues' memfd, futexes, eventfd, memory barriers
//! in other processes), `light_mutex`, `sleepers` and `unix_diag` are Linux-only; the rest
//! is plain Unix.
#![allow(unsafe_code)]

pub(crate) mod entry;
pub(crate) mod fd;
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) mod light_mutex;
#[cfg(all(test, any(target_os = "linux", target_os = "android")))]
mod membarrier_refused_tests;
pub(crate) mod process;
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) mod shm;
#[cfg(test)]
mod signal_deadline_tests;
#[cfg(test)]
mod signal_tests;
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) mod sleepers;
pub(crate) mod socket;
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) mod unix_diag;

/// A `Duration` as the kernel's `timespec` (saturating at `i64::MAX` seconds), for `poll`,
/// `epoll_wait` and `futex`.
pub(crate) fn timespec(d: std::time::Duration) -> rustix::time::Timespec {
    rustix::time::Timespec {
        tv_sec: d.as_secs().min(i64::MAX as u64) as i64,
        tv_nsec: i64::from(d.subsec_nanos()),
    }
}

/// `CLOCK_MONOTONIC` in nanoseconds (wrapping): the one clock every process on the machine
/// reads alike (within a time namespace), for times kept in shared memory.
/// [man7: clock_gettime.2]
pub(crate) fn monotonic_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    (t.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(t.tv_nsec as u64)
}

/// The CPU time the calling thread has used, for tests that bound a wait's spinning.
/// [man7: clock_gettime.2]
#[cfg(test)]
pub(crate) fn thread_cpu() -> std::time::Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    std::time::Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}
