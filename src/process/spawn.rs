//! The spawn start method: re-execute this executable and call an entry function there.
//!
//! The parent writes a payload (entry point, encoded arguments, the child's identity, the
//! numbers of the fds it passes) into a memfd, starts `/proc/self/exe` with that memfd and
//! the passed fds kept open, and names the memfd in the `MULTIPROC_SPAWN` variable of the
//! child's environment (never its own). The child's `main` calls [`init`] first; `init` sees
//! the variable, checks the payload's token, takes the fds, calls the entry and exits.
//!
//! In a libtest binary (`cargo test` with the default harness) `main` is not ours. There,
//! `init()` at the top of a test records that test's name, and children are started as
//! `<test binary> <that test> --exact`: libtest runs just that test, whose first line is
//! `init()`, which turns into the child. libtest's own output goes to /dev/null; the child's
//! stdout is restored from an fd passed along.

use std::ffi::OsString;
use std::hash::{BuildHasher, Hasher};
use std::io::{Read, Seek, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use super::current::{self, Identity};
use crate::error::{Error, ErrorKind, Result};
use crate::sys::entry::EntryPoint;

/// The environment variable naming a spawned child's payload: `<token hex>:<fd>`.
pub(crate) const ENV: &str = "MULTIPROC_SPAWN";
/// Starts every payload, followed by the 8-byte token.
const MAGIC: &[u8; 16] = b"multiproc-spawn\0";

/// How children of this process are started, decided by where [`init`] was called.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Mode {
    /// `init()` ran on the main thread: the executable's `main` calls it.
    Main,
    /// `init()` ran in the libtest test of this name.
    Test(String),
}

static MODE: OnceLock<Mode> = OnceLock::new();

thread_local! {
    /// The libtest test that called [`init`] on this thread: the one a spawn from here
    /// re-runs (`MODE` keeps the first such test, for spawns from other threads).
    static TEST: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// What the parent hands a spawned child.
#[derive(Debug, Serialize, Deserialize)]
struct Payload {
    exe: ExeId,
    entry: EntryPoint,
    identity: Identity,
    /// The passed fds, in the order the arguments refer to them.
    fds: Vec<RawFd>,
    /// In test mode, the real stdout, to put back over libtest's /dev/null.
    stdout: Option<RawFd>,
    /// fds the child holds open, untouched, until it exits (the write end of an exit
    /// sentinel pipe, where there are no pidfds); made close-on-exec there, so that no
    /// program the child runs holds them on after it.
    held: Vec<RawFd>,
    #[serde(with = "serde_bytes_compat")]
    args: Vec<u8>,
}

/// Bytes as a CBOR byte string (not an array of integers), without another dependency.
mod serde_bytes_compat {
    use serde::{Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(bytes)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct Bytes;
        impl serde::de::Visitor<'_> for Bytes {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a byte string")
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
        }
        d.deserialize_byte_buf(Bytes)
    }
}

/// The executable's identity: parent and child must run the same file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct ExeId {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: i64,
}

fn exe_path() -> Result<std::path::PathBuf> {
    if cfg!(any(target_os = "linux", target_os = "android")) {
        // The running image itself, even if its file was replaced or deleted since.
        Ok("/proc/self/exe".into())
    } else {
        Ok(std::env::current_exe()?)
    }
}

fn exe_id() -> Result<ExeId> {
    let meta = std::fs::metadata(exe_path()?)?;
    Ok(ExeId {
        dev: meta.dev(),
        ino: meta.ino(),
        size: meta.size(),
        mtime: meta.mtime(),
    })
}

/// Turns a spawned child into the child; anywhere else, records that children may now be
/// spawned. Call it first thing in `main` (and, in libtest tests that spawn, first thing in
/// the test).
///
/// In a libtest binary a spawned child is the test binary re-run for one test, found by the
/// name of the thread that called `init` (libtest names each test's thread after it). Call
/// it only on the test's own thread there: a helper thread you named yourself that calls
/// `init` again would start children as a test of its name, which libtest does not have, and
/// they would exit 0 without running their entry.
///
/// In a process started by [`Process::spawn`](crate::Process::spawn) it never returns: it
/// runs the entry function with its arguments and exits with 0 when it returns, 1 when it
/// panics (the message is on stderr), or whatever code the entry passed to
/// `std::process::exit`. Everywhere else it returns at once.
///
/// Which function it runs is read from the environment and an inherited file that the
/// parent wrote, so whoever starts the program decides. That is no more than any launcher
/// of an ordinary program can do to it anyway (`LD_PRELOAD`, `ptrace`), but it would cross
/// a privilege boundary in a set-user-ID, set-group-ID or file-capability program: there
/// (the kernel's `AT_SECURE` exec), `init` ignores the environment and returns at once, and
/// such a program can neither be a spawned child nor spawn (`start` fails with
/// `Unsupported`; fork and commands still work).
///
/// # Examples
/// ```
/// fn child(greeting: String) {
///     assert_eq!(greeting, "hello");
/// }
///
/// fn main() -> multiproc::Result<()> {
///     multiproc::init(); // in the child, runs `child` and exits
///     let mut p = multiproc::Process::spawn(child, "hello".to_owned());
///     p.start()?;
///     assert_eq!(p.join()?, 0);
///     Ok(())
/// }
/// ```
pub fn init() {
    let mode = match std::thread::current().name() {
        Some(name) if name != "main" => Mode::Test(name.to_owned()),
        _ => Mode::Main,
    };
    if let Mode::Test(name) = &mode {
        TEST.with(|t| *t.borrow_mut() = Some(name.clone()));
    }
    if let Some(child) = Child::from_environment() {
        let _ = MODE.set(mode);
        child.run();
    }
    let _ = MODE.set(mode);
}

/// The arguments and entry of a spawn, kept until `start`.
pub(crate) struct SpawnTarget {
    pub(crate) entry: EntryPoint,
    /// Encodes the arguments and lists the fds in them; they stay open while it lives.
    pub(crate) args: Box<dyn EncodeArgs>,
}

/// Spawn arguments behind a trait object: encodable, and dropped after the child started.
pub(crate) trait EncodeArgs: Send {
    fn encode(&self) -> Result<(Vec<u8>, Vec<RawFd>)>;
}

impl<A: Serialize + Send> EncodeArgs for A {
    fn encode(&self) -> Result<(Vec<u8>, Vec<RawFd>)> {
        super::passing::encode_args(self)
    }
}

/// Checks that children can be spawned from here.
pub(crate) fn check_ready() -> Result<()> {
    if crate::sys::process::secure_exec() {
        // Its child would be privileged too, and `init` there ignores the spawn (see
        // `init`): it would run `main` again rather than the entry.
        return Err(Error::with_message(
            ErrorKind::Unsupported,
            "a set-user-ID, set-group-ID or file-capability program cannot spawn (its children \
             could not trust what they are told to run); use fork or a command",
        ));
    }
    if MODE.get().is_none() {
        return Err(Error::with_message(
            ErrorKind::InvalidInput,
            "Process::spawn needs multiproc::init() to be called first thing in main (or, in \
             a libtest test, first thing in the test)",
        ));
    }
    Ok(())
}

/// A random token, so a payload fd is never mistaken for another process's fd.
fn random_token() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.finish()
}

/// Starts the child; `extra_keep` are more fds to keep open in it (a sentinel pipe).
pub(crate) fn start(
    target: &SpawnTarget,
    identity: Identity,
    extra_keep: &[RawFd],
) -> Result<std::process::Child> {
    check_ready()?;
    let mode = match MODE.get().cloned().unwrap_or(Mode::Main) {
        Mode::Test(first) => Mode::Test(TEST.with(|t| t.borrow().clone()).unwrap_or(first)),
        Mode::Main => Mode::Main,
    };
    let (args, fds) = target.args.encode()?;
    let mut keep = fds.clone();
    let mut command = std::process::Command::new(exe_path()?);
    if let Some(argv0) = std::env::args_os().next() {
        std::os::unix::process::CommandExt::arg0(&mut command, argv0);
    }
    let saved_stdout = match &mode {
        Mode::Main => None,
        Mode::Test(name) => {
            command.args([
                name.as_str(),
                "--exact",
                "--nocapture",
                "--include-ignored",
                "--test-threads=1",
                "-q",
            ]);
            command.stdout(std::process::Stdio::null());
            let saved = rustix::io::fcntl_dupfd_cloexec(std::io::stdout().as_fd(), 3)?;
            keep.push(saved.as_raw_fd());
            Some(saved)
        }
    };
    let token = random_token();
    // The running image cannot change under us: its identity is read once.
    static EXE: OnceLock<ExeId> = OnceLock::new();
    let exe = match EXE.get() {
        Some(exe) => *exe,
        None => {
            let exe = exe_id()?;
            *EXE.get_or_init(|| exe)
        }
    };
    let payload = Payload {
        exe,
        entry: target.entry,
        identity,
        fds,
        stdout: saved_stdout.as_ref().map(AsRawFd::as_raw_fd),
        held: extra_keep.to_vec(),
        args,
    };
    let file = write_payload(token, &payload)?;
    keep.push(file.as_raw_fd());
    keep.extend_from_slice(extra_keep);
    let value: OsString = format!("{token:016x}:{}", file.as_raw_fd()).into();
    command.env(ENV, value);
    command.env_remove(super::command::FDS_ENV);
    Ok(crate::sys::process::spawn(
        &mut command,
        &keep,
        payload.identity.daemon,
    )?)
}

/// The payload in an anonymous file (memfd where there is one), positioned at its start.
fn write_payload(token: u64, payload: &Payload) -> Result<OwnedFd> {
    let mut bytes = Vec::with_capacity(payload.args.len() + 256);
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&token.to_le_bytes());
    ciborium::into_writer(payload, &mut bytes)
        .map_err(|e| Error::with_source(ErrorKind::Encode, "could not encode spawn payload", e))?;
    let fd = anonymous_file()?;
    let mut file = std::fs::File::from(fd);
    file.write_all(&bytes)?;
    file.rewind()?;
    Ok(file.into())
}

#[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
fn anonymous_file() -> Result<OwnedFd> {
    Ok(rustix::fs::memfd_create(
        "multiproc-spawn",
        rustix::fs::MemfdFlags::CLOEXEC,
    )?)
}

#[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
fn anonymous_file() -> Result<OwnedFd> {
    // An unlinked temporary file.
    let dir = std::env::temp_dir();
    let path = dir.join(format!("multiproc-spawn-{:016x}", random_token()));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)?;
    std::fs::remove_file(&path)?;
    Ok(file.into())
}

/// This process, as a spawned child about to run its entry.
struct Child {
    payload: Payload,
}

impl Child {
    /// The child's payload if this process is a spawned child; `None` otherwise, including
    /// when the variable was inherited by some other program (its token will not match).
    fn from_environment() -> Option<Child> {
        if crate::sys::process::secure_exec() {
            // A privileged program: its launcher must not choose what it runs (see `init`).
            return None;
        }
        let value = std::env::var(ENV).ok()?;
        let (token, fd) = value.split_once(':')?;
        let token = u64::from_str_radix(token, 16).ok()?;
        let fd: RawFd = fd.parse().ok()?;
        let mut head = [0u8; 24];
        if crate::sys::fd::peek_inherited(fd, &mut head) != Some(head.len())
            || head[..16] != MAGIC[..]
            || head[16..] != token.to_le_bytes()
        {
            return None;
        }
        let file = crate::sys::fd::adopt_inherited(fd)?;
        match Child::read(file) {
            Ok(child) => Some(child),
            Err(e) => fail(&e),
        }
    }

    fn read(file: OwnedFd) -> Result<Child> {
        let mut bytes = Vec::new();
        let mut file = std::fs::File::from(file);
        file.rewind()?;
        file.read_to_end(&mut bytes)?;
        let payload: Payload = ciborium::from_reader(&bytes[MAGIC.len() + 8..])
            .map_err(|e| Error::with_source(ErrorKind::Decode, "bad spawn payload", e))?;
        if payload.exe != exe_id()? {
            return Err(Error::with_message(
                ErrorKind::Unsupported,
                "the spawned child runs a different executable file than its parent",
            ));
        }
        Ok(Child { payload })
    }

    fn run(self) -> ! {
        let Payload {
            entry,
            identity,
            fds,
            stdout,
            held,
            args,
            ..
        } = self.payload;
        if let Some(saved) = stdout.and_then(crate::sys::fd::adopt_inherited) {
            let _ = rustix::stdio::dup2_stdout(&saved);
        }
        for fd in held {
            // Adopting makes it close-on-exec; it stays open (never closed by us) for as
            // long as this process lives, which is what the parent watches it for.
            let _ = crate::sys::fd::adopt_inherited(fd).map(std::os::fd::IntoRawFd::into_raw_fd);
        }
        let mut listed = fds.clone();
        listed.sort_unstable();
        listed.dedup();
        if listed.len() != fds.len() {
            // Our parents list each fd once: two owners of one fd would close it twice.
            fail(&Error::with_message(
                ErrorKind::Decode,
                "bad spawn payload: an fd listed twice",
            ));
        }
        let mut inherited = Vec::with_capacity(fds.len());
        for fd in fds {
            match crate::sys::fd::adopt_inherited(fd) {
                Some(fd) => inherited.push(fd),
                None => fail(&Error::with_message(
                    ErrorKind::Io,
                    format!("fd {fd} passed by the parent is not open"),
                )),
            }
        }
        if identity.daemon {
            if let Some(parent) = i32::try_from(identity.parent_pid)
                .ok()
                .and_then(rustix::process::Pid::from_raw)
            {
                if !crate::sys::process::die_with_parent(parent) {
                    // The parent is gone already; a daemon child goes with it.
                    super::exit_now(1);
                }
            }
        }
        current::become_child(identity);
        super::passing::receive(inherited);
        let outcome = std::panic::catch_unwind(|| entry.call(&args));
        let code = match outcome {
            Ok(Ok(())) => 0,
            Ok(Err(e)) => {
                eprintln!("multiproc: spawned child could not run its entry: {e}");
                1
            }
            // The panic hook printed the message.
            Err(payload) => {
                super::forget_panic(payload);
                1
            }
        };
        super::exit_now(code)
    }
}

fn fail(error: &Error) -> ! {
    eprintln!("multiproc: spawned child cannot start: {error}");
    super::exit_now(1)
}
