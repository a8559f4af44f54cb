//! Calling a function in a re-executed copy of this executable, named by its offset.
//!
//! The spawn start method runs `entry(args)` in a fresh process started from the same
//! executable. Functions cannot be sent, but within one executable the distance between two
//! functions is fixed at link time: address-space randomisation moves the whole image, not
//! its parts. So the parent sends the offsets of `entry` and of a trampoline monomorphised
//! for its argument type, both measured from [`anchor`], and the child adds its own anchor's
//! address back.
//!
//! That is sound only if the child runs the same executable and both functions live in it
//! (not in a shared library loaded at its own address). The parent checks the second with
//! `dladdr`; the child checks the first with the executable's identity (device, inode, size,
//! modification time) and a fingerprint: the offset of a known function, which differs in
//! any other build.

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};

/// The argument decoder and caller for one argument type, called with the entry's address.
type Trampoline = fn(usize, &[u8]) -> Result<()>;

/// Where an entry function and its trampoline are, relative to [`anchor`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct EntryPoint {
    trampoline: isize,
    entry: isize,
    fingerprint: isize,
}

/// The point all offsets are measured from. Never inlined, so it has one address.
#[inline(never)]
fn anchor() {}

/// A second function whose offset from [`anchor`] identifies this build.
#[inline(never)]
fn fingerprint(_: ()) {}

fn base() -> usize {
    anchor as fn() as usize
}

fn offset(address: usize) -> isize {
    address.wrapping_sub(base()) as isize
}

impl EntryPoint {
    /// The entry point of `entry`, whose argument the child decodes with `decode`.
    ///
    /// # Errors
    /// `Unsupported` if `entry` does not live in the same loaded object as this crate (a
    /// dynamic library), where its offset would mean nothing in the child.
    pub(crate) fn of<A: crate::process::SpawnArgs>(entry: fn(A)) -> Result<EntryPoint> {
        let trampoline: Trampoline = trampoline::<A>;
        let addresses = [base(), entry as usize, trampoline as usize];
        if !same_object(&addresses) {
            return Err(Error::with_message(
                ErrorKind::Unsupported,
                "a spawn entry function must be linked into the executable itself, not a \
                 dynamic library",
            ));
        }
        Ok(EntryPoint {
            trampoline: offset(trampoline as usize),
            entry: offset(entry as usize),
            fingerprint: own_fingerprint(),
        })
    }

    /// Calls the entry with `args` in this (child) process.
    ///
    /// # Errors
    /// `Unsupported` if this executable is not the build the entry point came from;
    /// `Decode` if `args` are not the entry's argument type.
    pub(crate) fn call(&self, args: &[u8]) -> Result<()> {
        if self.fingerprint != own_fingerprint() {
            return Err(Error::with_message(
                ErrorKind::Unsupported,
                "spawned child runs a different build of the executable than its parent",
            ));
        }
        let trampoline = base().wrapping_add_signed(self.trampoline);
        let entry = base().wrapping_add_signed(self.entry);
        // This process runs the same executable as the parent that computed the offsets
        // (the caller checked the executable's identity, and the fingerprint above matches),
        // both functions were checked to live in that executable's image, and the image
        // moves as a whole.
        // SAFETY: so `trampoline` is the address of `trampoline::<A>` for the parent's `A`:
        // a function of exactly the `Trampoline` type.
        let trampoline: Trampoline =
            unsafe { std::mem::transmute::<usize, Trampoline>(trampoline) };
        trampoline(entry, args)
    }
}

fn own_fingerprint() -> isize {
    offset(fingerprint as fn(()) as usize)
}

/// Decodes the argument and calls the entry at `entry`.
fn trampoline<A: crate::process::SpawnArgs>(entry: usize, args: &[u8]) -> Result<()> {
    // SAFETY: `EntryPoint::of::<A>` paired this trampoline with a `fn(A)`, and `call`
    // rebuilt that function's address in the same executable image (see `call`), so
    // `entry` is the address of a function of type `fn(A)`.
    let entry = unsafe { std::mem::transmute::<usize, fn(A)>(entry) };
    let args: A = crate::process::decode_args(args)?;
    entry(args);
    Ok(())
}

/// Whether all `addresses` lie in the same loaded object. Where `dladdr` knows none of them
/// (a static executable has no dynamic loader), there is only one object.
fn same_object(addresses: &[usize]) -> bool {
    let mut bases = addresses.iter().map(|&a| object_base(a));
    let first = bases.next().flatten();
    bases.all(|b| b == first)
}

fn object_base(address: usize) -> Option<usize> {
    // SAFETY: a zeroed `Dl_info` is a valid value for `dladdr` to overwrite.
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    // SAFETY: `dladdr` only looks the address up; `info` is a valid pointer.
    let found = unsafe { libc::dladdr(address as *const libc::c_void, &mut info) };
    (found != 0).then_some(info.dli_fbase as usize)
}
