//! One-shot readiness watches: call a closure with the reactor once an fd is ready. This is
//! how a process [`Sentinel`](crate::Sentinel) (or any other [`Waitable`]) joins a reactor.

use std::os::fd::{AsRawFd, RawFd};

use mio::{Interest, Registry};
use slab::Slab;

use super::Reactor;
use crate::error::Result;
use crate::wait::Waitable;

/// Watch tokens live above this bit; connection tokens are slab indices far below it.
pub(super) const WATCH_BIT: usize = 1 << (usize::BITS - 2);

/// Names a watch set with [`Reactor::when_ready`], to cancel it.
///
/// # Examples
/// ```
/// # fn main() -> multiproc::Result<()> {
/// let mut p = multiproc::Process::fork(|| {});
/// p.start()?;
/// let mut reactor = multiproc::Reactor::new()?;
/// let id = reactor.when_ready(p.sentinel()?, |_, _| {})?;
/// assert!(reactor.cancel_watch(id));
/// assert!(!reactor.cancel_watch(id));
/// p.join()?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WatchId {
    index: usize,
    generation: u64,
}

/// What fires a watch: the user's closure with its source.
pub(super) type Fire = Box<dyn FnOnce(&mut Reactor)>;

pub(super) struct Watch {
    fd: RawFd,
    generation: u64,
    /// Calls the user's closure with the source it owns (and so keeps `fd` open).
    fire: Fire,
}

/// The watches of one reactor.
#[derive(Default)]
pub(super) struct Watches {
    slab: Slab<Watch>,
    generation: u64,
    /// Watches whose source was ready before epoll could say so (buffered data).
    due: Vec<WatchId>,
}

impl Watches {
    pub(super) fn len(&self) -> usize {
        self.slab.len()
    }

    pub(super) fn insert<W, F>(&mut self, registry: &Registry, source: W, f: F) -> Result<WatchId>
    where
        W: Waitable + 'static,
        F: FnOnce(&mut Reactor, W) + 'static,
    {
        let fd = source.wait_fd()?.as_raw_fd();
        let buffered = source.is_ready_buffered();
        let entry = self.slab.vacant_entry();
        let index = entry.key();
        registry
            .register(
                &mut mio::unix::SourceFd(&fd),
                mio::Token(WATCH_BIT | index),
                Interest::READABLE,
            )
            .map_err(crate::wait::registered_twice)?;
        self.generation = self.generation.wrapping_add(1);
        let generation = self.generation;
        entry.insert(Watch {
            fd,
            generation,
            fire: Box::new(move |reactor| f(reactor, source)),
        });
        let id = WatchId { index, generation };
        if buffered {
            self.due.push(id);
        }
        Ok(id)
    }

    /// Removes a watch without firing it; true if it was there.
    pub(super) fn cancel(&mut self, registry: &Registry, id: WatchId) -> bool {
        match self.slab.get(id.index) {
            Some(w) if w.generation == id.generation => {
                let watch = self.slab.remove(id.index);
                let _ = registry.deregister(&mut mio::unix::SourceFd(&watch.fd));
                // As for connections: stale entries dropped once they outnumber the watches
                // (amortised; a round ignores them anyway).
                if self.due.len() > 2 * self.slab.len() + 64 {
                    let slab = &self.slab;
                    self.due.retain(|due| {
                        slab.get(due.index)
                            .is_some_and(|w| w.generation == due.generation)
                    });
                }
                true
            }
            _ => false,
        }
    }

    /// The watch a mio token names now: read when its event arrives, so that a callback
    /// fired before it, which cancels it and sets a new watch in its slot, cannot make the
    /// event fire the new one.
    pub(super) fn id_of(&self, token: mio::Token) -> Option<WatchId> {
        let index = token.0 & !WATCH_BIT;
        let watch = self.slab.get(index)?;
        Some(WatchId {
            index,
            generation: watch.generation,
        })
    }

    /// Takes the watch `id`, deregistered, ready to fire; `None` if it was cancelled.
    pub(super) fn take(&mut self, registry: &Registry, id: WatchId) -> Option<Fire> {
        if self.slab.get(id.index)?.generation != id.generation {
            return None;
        }
        let watch = self.slab.remove(id.index);
        let _ = registry.deregister(&mut mio::unix::SourceFd(&watch.fd));
        Some(watch.fire)
    }

    /// Watches that were ready at registration.
    pub(super) fn take_due(&mut self) -> Vec<WatchId> {
        std::mem::take(&mut self.due)
    }
}
