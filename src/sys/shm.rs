//! Shared memory between processes: a memfd mapped `MAP_SHARED`, atomics inside it, byte
//! copies in and out, page allocation and release, futex waits on its words.
//!
//! The mapping is memory other processes write at any moment, so no Rust reference to its
//! bytes is ever made: bytes are copied in and out through raw pointers (like memory-mapped
//! I/O), and only atomics (`AtomicU32`/`AtomicU64`, which tolerate concurrent access by
//! design) are handed out as references. Whatever a copy reads may be stale or half-written;
//! callers validate it (the queue re-checks a compare-and-swap after copying).

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::time::Duration;

use rustix::fs::FallocateFlags;
use rustix::mm::{MapFlags, ProtFlags};

/// A `MAP_SHARED` read-write mapping of a whole file, unmapped on drop.
#[derive(Debug)]
pub(crate) struct SharedMap {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain memory owned by this value; every access goes through
// atomics or raw copies that tolerate concurrent writers (see the module docs), so sharing
// and sending it between threads is as sound as between processes.
unsafe impl Send for SharedMap {}
// SAFETY: as above.
unsafe impl Sync for SharedMap {}

impl SharedMap {
    /// A new anonymous file (memfd) of `len` bytes, sparse (no memory is used until pages
    /// are written or allocated), and its mapping. The file is sealed against shrinking
    /// (and against further seals): a process it is passed to can never cut it short under
    /// our mapping, which would make our next access to the lost pages a SIGBUS.
    /// [man7: memfd_create.2, mmap.2, fcntl.2 (File Sealing)]
    pub(crate) fn create(name: &str, len: usize) -> io::Result<(OwnedFd, SharedMap)> {
        let fd = rustix::fs::memfd_create(
            name,
            rustix::fs::MemfdFlags::CLOEXEC | rustix::fs::MemfdFlags::ALLOW_SEALING,
        )?;
        rustix::fs::ftruncate(&fd, len as u64)?;
        rustix::fs::fcntl_add_seals(
            &fd,
            rustix::fs::SealFlags::SHRINK | rustix::fs::SealFlags::SEAL,
        )?;
        let map = SharedMap::open(fd.as_fd(), len)?;
        Ok((fd, map))
    }

    /// Maps the first `len` bytes of `fd`, which must be at least that long and sealed
    /// against shrinking (as [`create`](Self::create) makes it): a file from another process
    /// that could still be cut short is refused.
    pub(crate) fn open(fd: BorrowedFd<'_>, len: usize) -> io::Result<SharedMap> {
        let sealed = rustix::fs::fcntl_get_seals(fd)
            .is_ok_and(|seals| seals.contains(rustix::fs::SealFlags::SHRINK));
        if !sealed {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "shared file not sealed against shrinking (not made by this library)",
            ));
        }
        let size = rustix::fs::fstat(fd)?.st_size;
        if u64::try_from(size).map_or(true, |size| size < len as u64) || len == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "shared file shorter than its layout",
            ));
        }
        // The file is at least `len` long and sealed against shrinking (both checked
        // above; seals are never removed), so no access within `len` faults with SIGBUS.
        // SAFETY: a fresh mapping at an address the kernel picks: it aliases no Rust object.
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED | MapFlags::NORESERVE,
                fd,
                0,
            )?
        };
        let ptr = NonNull::new(ptr.cast::<u8>())
            .ok_or_else(|| io::Error::other("mmap returned a null mapping"))?;
        Ok(SharedMap { ptr, len })
    }

    #[inline]
    fn check(&self, offset: usize, len: usize, align: usize) {
        if offset % align != 0 || offset.checked_add(len).is_none_or(|end| end > self.len) {
            out_of_bounds(offset, len, self.len);
        }
    }

    /// The `AtomicU64` at `offset` (8-aligned, in bounds; panics otherwise: a layout bug).
    #[inline]
    pub(crate) fn u64_at(&self, offset: usize) -> &AtomicU64 {
        self.check(offset, 8, 8);
        // SAFETY: in bounds and aligned (checked); the mapping lives as long as `self`; an
        // `AtomicU64` has the size and alignment of a `u64` and is made for concurrent
        // access, which is all other processes do to it.
        unsafe { &*self.ptr.as_ptr().add(offset).cast::<AtomicU64>() }
    }

    /// The `AtomicU32` at `offset` (4-aligned, in bounds).
    #[inline]
    pub(crate) fn u32_at(&self, offset: usize) -> &AtomicU32 {
        self.check(offset, 4, 4);
        // SAFETY: as in `u64_at`.
        unsafe { &*self.ptr.as_ptr().add(offset).cast::<AtomicU32>() }
    }

    /// Copies `buf.len()` bytes from `offset` into `buf`. The bytes may be changing under
    /// the copy; the caller validates what it read.
    #[inline]
    pub(crate) fn read(&self, offset: usize, buf: &mut [u8]) {
        self.check(offset, buf.len(), 1);
        // SAFETY: the source is in bounds of the live mapping and never aliases `buf` (a
        // Rust allocation); no reference to the shared bytes is created.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.ptr.as_ptr().add(offset),
                buf.as_mut_ptr(),
                buf.len(),
            );
        }
    }

    /// Appends `len` bytes from `offset` to `out`.
    #[inline]
    pub(crate) fn read_append(&self, offset: usize, len: usize, out: &mut Vec<u8>) {
        self.check(offset, len, 1);
        out.reserve(len);
        // SAFETY: `reserve` made room for `len` bytes after `out.len()`; the source is in
        // bounds of the live mapping and cannot alias `out`'s heap buffer.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.ptr.as_ptr().add(offset),
                out.as_mut_ptr().add(out.len()),
                len,
            );
            out.set_len(out.len() + len);
        }
    }

    /// Copies `data` to `offset`. Pages there must have been allocated
    /// ([`allocate`]) so the write cannot fault for want of memory.
    #[inline]
    pub(crate) fn write(&self, offset: usize, data: &[u8]) {
        self.check(offset, data.len(), 1);
        // SAFETY: the destination is in bounds of the live, writable mapping and cannot
        // alias `data` (readers elsewhere only copy from it).
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.as_ptr().add(offset), data.len());
        }
    }
}

/// [`SharedMap::check`]'s panic, out of line: the checks sit on every queue operation's path.
#[cold]
#[inline(never)]
fn out_of_bounds(offset: usize, len: usize, map_len: usize) -> ! {
    panic!("shared memory access out of bounds: {offset}+{len} of {map_len}");
}

impl SharedMap {
    /// Gives the `len` bytes at `offset` memory and maps them writable in this process, in
    /// one call (`MADV_POPULATE_WRITE`, Linux 5.14), so writes there neither fault nor fail
    /// with SIGBUS: out of memory is an error here instead. Older kernels: `fallocate` of
    /// `fd` (the mapped file), the pages then fault in on first touch. Contents are
    /// unchanged. [man7: madvise.2]
    pub(crate) fn populate(&self, fd: BorrowedFd<'_>, offset: usize, len: usize) -> io::Result<()> {
        self.check(offset, len, 4096);
        // SAFETY: the range is in bounds of the live mapping (checked) and page-aligned
        // (the mapping starts on a page); populating only faults its pages in, as a write
        // to each would without writing, so no byte anyone reads changes.
        let populated = retry(|| unsafe {
            rustix::mm::madvise(
                self.ptr.as_ptr().add(offset).cast(),
                len,
                rustix::mm::Advice::LinuxPopulateWrite,
            )
        });
        match populated {
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) => {
                allocate(fd, offset as u64, len as u64)
            }
            other => other,
        }
    }
}

impl Drop for SharedMap {
    fn drop(&mut self) {
        // SAFETY: the mapping was made by `open` with this address and length, and no
        // reference into it outlives `self` (atomics borrow from `self`).
        unsafe {
            let _ = rustix::mm::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

/// Allocates memory for `len` bytes of `fd` at `offset`, so writes through a mapping cannot
/// fail with SIGBUS; out of memory is an error here instead. [man7: fallocate.2]
pub(crate) fn allocate(fd: BorrowedFd<'_>, offset: u64, len: u64) -> io::Result<()> {
    retry(|| rustix::fs::fallocate(fd, FallocateFlags::empty(), offset, len))
}

/// Gives the memory of `len` bytes at `offset` back; the range then reads as zeros.
pub(crate) fn release(fd: BorrowedFd<'_>, offset: u64, len: u64) -> io::Result<()> {
    retry(|| {
        rustix::fs::fallocate(
            fd,
            FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
            offset,
            len,
        )
    })
}

fn retry(mut f: impl FnMut() -> rustix::io::Result<()>) -> io::Result<()> {
    loop {
        match f() {
            Err(rustix::io::Errno::INTR) => continue,
            other => return Ok(other?),
        }
    }
}

/// Sleeps while `word` holds `expected`, at most `timeout`; returns on a wake, a change,
/// the timeout or a signal (callers re-check their condition). Shared between processes.
/// [man7: futex.2]
pub(crate) fn futex_wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
    let timeout = timeout.map(super::timespec);
    let _ = rustix::thread::futex::wait(
        word,
        rustix::thread::futex::Flags::empty(),
        expected,
        timeout.as_ref(),
    );
}

/// Wakes one process sleeping on `word`; how many it woke (0 or 1). An error (none is
/// expected for a mapped word) counts as one woken, so that a caller that lowers a flag
/// only when nobody was asleep keeps it raised.
pub(crate) fn futex_wake_one(word: &AtomicU32) -> usize {
    rustix::thread::futex::wake(word, rustix::thread::futex::Flags::empty(), 1).unwrap_or(1)
}

/// Wakes every process sleeping on `word`.
pub(crate) fn futex_wake_all(word: &AtomicU32) {
    let _ =
        rustix::thread::futex::wake(word, rustix::thread::futex::Flags::empty(), i32::MAX as u32);
}

/// Makes this process a target of [`barrier_everywhere`]: from now on, another process's
/// call runs a full memory barrier on every CPU running one of our threads. Lets this
/// process publish with plain stores where a store-load order with other processes is
/// needed only rarely (see docs/design.md, "the producer publishes without a locked
/// instruction"). A registration belongs to the address space: a forked child inherits it
/// (`fork` copies `mm->membarrier_state`), `execve` clears it (a spawned child registers
/// afresh); registering again is a no-op. `false` where the kernel refuses (before Linux
/// 4.16, or a seccomp filter): such a process publishes with full barriers of its own.
/// [man7: membarrier.2]
pub(crate) fn register_for_barriers() -> bool {
    use rustix::thread::{MembarrierCommand, membarrier};
    membarrier(MembarrierCommand::RegisterGlobalExpedited).is_ok()
}

/// A full memory barrier in this thread and on every CPU that runs a thread of a process
/// registered by [`register_for_barriers`] (`MEMBARRIER_CMD_GLOBAL_EXPEDITED`: ~7 µs
/// here, an interrupt on each of those CPUs). After it returns, every store such a thread
/// made before its interrupt is visible here, and every load it makes after sees what
/// this thread stored before the call. `false` if the kernel refused (nothing was done
/// for other processes).
pub(crate) fn barrier_everywhere() -> bool {
    use rustix::thread::{MembarrierCommand, membarrier};
    membarrier(MembarrierCommand::GlobalExpedited).is_ok()
}

/// [`barrier_everywhere`] for this process's own threads only
/// (`MEMBARRIER_CMD_PRIVATE_EXPEDITED`: ~2 µs here), registering the process for it first
/// if it was not (the first call in a process, or after `execve`). `false` if
/// the kernel refused.
pub(crate) fn barrier_own_threads() -> bool {
    use rustix::thread::{MembarrierCommand, membarrier};
    match membarrier(MembarrierCommand::PrivateExpedited) {
        Ok(()) => true,
        Err(rustix::io::Errno::PERM) => {
            membarrier(MembarrierCommand::RegisterPrivateExpedited).is_ok()
                && membarrier(MembarrierCommand::PrivateExpedited).is_ok()
        }
        Err(_) => false,
    }
}

/// A non-blocking, close-on-exec eventfd, the readiness fd of a queue. [man7: eventfd.2]
pub(crate) fn eventfd() -> io::Result<OwnedFd> {
    Ok(rustix::event::eventfd(
        0,
        rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK,
    )?)
}

/// Checks that `fd` is an eventfd (a queue's readiness fd from another process must be) and
/// makes it non-blocking, as [`eventfd`] makes it: reading and writing it must never wait.
/// (The flag is shared by every process holding the fd; a process that clears it again can
/// stall the others, as one can by filling or shutting down the queue: sharing a queue
/// means trusting the processes it is shared with not to deny service. It cannot make
/// them crash.)
pub(crate) fn adopt_eventfd(fd: BorrowedFd<'_>) -> io::Result<()> {
    let link = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))?;
    if link.as_os_str() != "anon_inode:[eventfd]" {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "a queue's readiness fd is not an eventfd but {}",
                link.display()
            ),
        ));
    }
    let flags = rustix::fs::fcntl_getfl(fd)?;
    if !flags.contains(rustix::fs::OFlags::NONBLOCK) {
        rustix::fs::fcntl_setfl(fd, flags | rustix::fs::OFlags::NONBLOCK)?;
    }
    Ok(())
}

/// Adds 1 to an eventfd's counter (it becomes readable).
pub(crate) fn eventfd_signal(fd: BorrowedFd<'_>) {
    let _ = rustix::io::write(fd, &1u64.to_ne_bytes());
}

/// Resets an eventfd's counter to 0 (it stops being readable).
pub(crate) fn eventfd_drain(fd: BorrowedFd<'_>) {
    let mut buf = [0u8; 8];
    let _ = rustix::io::read(fd, &mut buf);
}

/// Whether the process `pid` that started at `start_time` (clock ticks since boot, field 22
/// of `/proc/<pid>/stat`) still runs. `None` where that cannot be told (its entry there is
/// unreadable, or hidden from us while the pid is in use).
pub(crate) fn process_alive(pid: u32, start_time: u64) -> Option<bool> {
    process_alive_masked(pid, start_time, u64::MAX)
}

/// [`process_alive`] for a start time kept only in the bits of `mask` (0: any start time).
pub(crate) fn process_alive_masked(pid: u32, start_time: u64, mask: u64) -> Option<bool> {
    match process_start_time(pid) {
        Ok(Some(t)) => Some(start_time == 0 || t & mask == start_time),
        // Gone, or its main thread a zombie: dead once no other thread is left either (a
        // killed process's threads may still be finishing a system call). With no entry at
        // all, the kernel says whether the pid is in use: `/proc` may hide a live process.
        Ok(None) => match thread_count(pid) {
            0 => pid_unused(pid).then_some(false),
            threads => Some(threads > 1),
        },
        Err(_) => None,
    }
}

/// Whether no process has pid `pid`, asked of the kernel rather than of `/proc`: an entry
/// missing there may be one hidden from us (`hidepid=2`, a process of another user), whose
/// pid `kill(pid, 0)` still finds (`EPERM`). A live process hidden so, taken for dead, had
/// its queue log freed under it. [man7: kill.2, proc.5 (hidepid)]
fn pid_unused(pid: u32) -> bool {
    // Pids are positive `i32`s (a negative one would name a process group).
    let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return true;
    };
    rustix::process::test_kill_process(pid) == Err(rustix::io::Errno::SRCH)
}

/// This process's start time (field 22 of `/proc/self/stat`; 0 if it cannot be read), read
/// once per process: a forked child, with another pid, reads its own.
pub(crate) fn own_start_time() -> u64 {
    use std::sync::atomic::Ordering;
    static PID: AtomicU32 = AtomicU32::new(0);
    static START: AtomicU64 = AtomicU64::new(0);
    let pid = std::process::id();
    if PID.load(Ordering::Acquire) == pid {
        return START.load(Ordering::Relaxed);
    }
    let start = process_start_time(pid).ok().flatten().unwrap_or(0);
    // Racing threads store the same pair; the pid goes last, so it vouches for the start.
    START.store(start, Ordering::Relaxed);
    PID.store(pid, Ordering::Release);
    start
}

/// How many threads process `pid` still has (`/proc/<pid>/task`): 0 if it is gone (or hidden
/// from us: see [`pid_unused`]). A killed process's main thread may be a zombie while others
/// are still leaving a system call.
pub(crate) fn thread_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |tasks| tasks.count())
}

/// Field 22 of `/proc/<pid>/stat`, or `None` if the process does not exist (or is a zombie:
/// it runs no more).
pub(crate) fn process_start_time(pid: u32) -> io::Result<Option<u64>> {
    let stat = match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    // The command name (field 2) is in parentheses and may hold spaces: split after it.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| io::Error::other("unreadable /proc stat"))?;
    let mut fields = rest.split_whitespace();
    let state = fields.next().unwrap_or("");
    if state == "Z" || state == "X" {
        return Ok(None);
    }
    // After the state (field 3), field 22 is the 19th.
    let start = fields
        .nth(18)
        .and_then(|f| f.parse().ok())
        .ok_or_else(|| io::Error::other("unreadable /proc stat"))?;
    Ok(Some(start))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shared_file_cannot_be_cut_short_and_an_unsealed_one_is_refused() -> io::Result<()> {
        let (fd, map) = SharedMap::create("multiproc-test", 1 << 20)?;
        // What a process it was passed to might try: refused, so no access of ours can
        // fault with SIGBUS for being past the end.
        assert_eq!(
            rustix::fs::ftruncate(&fd, 4096),
            Err(rustix::io::Errno::PERM)
        );
        map.u64_at((1 << 20) - 8)
            .store(7, std::sync::atomic::Ordering::SeqCst);
        assert!(SharedMap::open(fd.as_fd(), 1 << 20).is_ok());
        // Giving pages back still works under the seal.
        release(fd.as_fd(), 0, 1 << 16)?;
        // A memfd that could still shrink, and files that are no memfd at all.
        let unsealed = rustix::fs::memfd_create("multiproc-test", rustix::fs::MemfdFlags::CLOEXEC)?;
        rustix::fs::ftruncate(&unsealed, 1 << 20)?;
        assert!(SharedMap::open(unsealed.as_fd(), 1 << 20).is_err());
        let (read, _write) = rustix::pipe::pipe()?;
        assert!(SharedMap::open(read.as_fd(), 4096).is_err());
        Ok(())
    }

    #[test]
    fn a_readiness_fd_must_be_an_eventfd_and_becomes_non_blocking() -> io::Result<()> {
        let blocking = rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC)?;
        adopt_eventfd(blocking.as_fd())?;
        let flags = rustix::fs::fcntl_getfl(&blocking)?;
        assert!(flags.contains(rustix::fs::OFlags::NONBLOCK));
        // Draining an empty one returns at once.
        eventfd_drain(blocking.as_fd());
        let (read, _write) = rustix::pipe::pipe()?;
        assert!(adopt_eventfd(read.as_fd()).is_err());
        let memfd = rustix::fs::memfd_create("multiproc-test", rustix::fs::MemfdFlags::CLOEXEC)?;
        assert!(adopt_eventfd(memfd.as_fd()).is_err());
        Ok(())
    }
}
