//! Passing Connections to a spawned child inside its serde arguments.
//!
//! While a spawn's arguments are encoded, a `Connection` serialises as the index of its fd
//! in a list the parent then keeps open across `exec`; while the child decodes them, the
//! index takes that fd back out of the list it inherited. Outside those two moments a
//! `Connection` refuses to serialise: an fd number means nothing to another process.
//! Python does the same with `DupFd` and its `reduction` registry during spawning.

use std::any::Any;
use std::cell::RefCell;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use serde::de::{DeserializeOwned, Error as _};
use serde::ser::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::codec::Codec;
use crate::codec::cbor::Cbor;
use crate::connection::Connection;
use crate::error::Result;

/// The serde name a passed fd travels under.
const PASSED_FD: &str = "multiproc::PassedFd";

thread_local! {
    /// fds of the arguments being encoded for a spawn, in order.
    static OUTGOING: RefCell<Option<Vec<RawFd>>> = const { RefCell::new(None) };
    /// fds a spawned child inherited for its arguments; each object decoded gets its own
    /// duplicate, and these are closed once the arguments are decoded.
    static INCOMING: RefCell<Option<Vec<OwnedFd>>> = const { RefCell::new(None) };
    /// Handles decoded so far, by the index of the fd they were made from, so that objects
    /// that shared one in the parent (clones of a `Queue`) share one in the child too.
    static DECODED: RefCell<Vec<(u32, Box<dyn Any>)>> = const { RefCell::new(Vec::new()) };
}

/// Encodes spawn arguments, collecting the fds of the Connections in them. The fds stay
/// owned by `args`; keep it alive until the child has started.
pub(crate) fn encode_args<A: Serialize + ?Sized>(args: &A) -> Result<(Vec<u8>, Vec<RawFd>)> {
    /// Puts back what `OUTGOING` held before, however the encoding ends: a `Serialize` that
    /// panics must not leave connections serialisable on this thread (as fd numbers, in
    /// any message), and one that starts another spawn must not lose the outer list.
    struct Restore(Option<Vec<RawFd>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let before = self.0.take();
            OUTGOING.with(|o| *o.borrow_mut() = before);
        }
    }
    let _restore = Restore(OUTGOING.with(|o| o.replace(Some(Vec::new()))));
    let mut out = Vec::new();
    let encoded = Cbor::default().encode(args, &mut out);
    let fds = OUTGOING.with(|o| o.borrow_mut().take()).unwrap_or_default();
    encoded.map(|()| (out, fds))
}

/// Makes `fds` (in the order the parent listed them) available to [`decode_args`].
pub(crate) fn receive(fds: Vec<OwnedFd>) {
    INCOMING.with(|i| *i.borrow_mut() = Some(fds));
}

/// Decodes a spawned child's arguments; fds no Connection claimed are closed.
pub(crate) fn decode_args<A: DeserializeOwned>(bytes: &[u8]) -> Result<A> {
    let decoded = Cbor::default().decode(bytes);
    INCOMING.with(|i| i.borrow_mut().take());
    DECODED.with(|d| d.borrow_mut().clear());
    decoded
}

/// The handle made from inherited fd `index` for an object decoded earlier in these
/// arguments, or a new one from `make` (remembered for the next object that refers to it).
pub(crate) fn shared_handle<H: Clone + 'static>(
    index: u32,
    make: impl FnOnce() -> std::result::Result<H, String>,
) -> std::result::Result<H, String> {
    let known = DECODED.with(|d| {
        d.borrow()
            .iter()
            .find(|(i, _)| *i == index)
            .and_then(|(_, handle)| handle.downcast_ref::<H>().cloned())
    });
    if let Some(handle) = known {
        return Ok(handle);
    }
    let handle = make()?;
    DECODED.with(|d| d.borrow_mut().push((index, Box::new(handle.clone()))));
    Ok(handle)
}

/// Lists `conn`'s fd for the spawn being encoded; its index in the list.
fn pass(conn: &Connection) -> std::result::Result<u32, String> {
    if conn.is_closed() {
        return Err("cannot pass a closed Connection to a child".into());
    }
    let unread = conn.buffered_len();
    let unsent = conn.pending_send_len();
    if unread > 0 || unsent > 0 {
        return Err(format!(
            "cannot pass a Connection holding {unread} received bytes not yet returned and \
             {unsent} bytes not yet sent: they would be lost"
        ));
    }
    pass_fd(conn.as_raw_fd(), "a Connection")
}

/// Lists `fd` for the spawn being encoded (`what` names the object for the error). An fd
/// listed already (two clones of one `Queue`) keeps its index: the child gets it once, and
/// each object that refers to it gets a duplicate (queues: one handle, see
/// [`shared_handle`]).
pub(crate) fn pass_fd(fd: RawFd, what: &str) -> std::result::Result<u32, String> {
    OUTGOING.with(|o| match o.borrow_mut().as_mut() {
        Some(fds) => {
            let index = match fds.iter().position(|&listed| listed == fd) {
                Some(index) => index,
                None => {
                    fds.push(fd);
                    fds.len() - 1
                }
            };
            u32::try_from(index).map_err(|_| "too many fds".to_owned())
        }
        None => Err(format!(
            "{what} serialises only as an argument of a spawned Process"
        )),
    })
}

/// A duplicate of the inherited fd listed at `index`, for one object to own: objects that
/// refer to one fd (clones of one `Queue`) each own a duplicate, as they did in the parent.
pub(crate) fn take(index: u32) -> std::result::Result<OwnedFd, String> {
    INCOMING.with(|i| {
        let incoming = i.borrow();
        let fd = incoming
            .as_ref()
            .ok_or("a Connection deserialises only from a spawned child's arguments")?
            .get(index as usize)
            .ok_or_else(|| format!("no inherited fd #{index} for a Connection"))?;
        rustix::io::fcntl_dupfd_cloexec(fd, 0)
            .map_err(|e| format!("cannot duplicate inherited fd #{index}: {e}"))
    })
}

impl Serialize for Connection {
    /// Only as (part of) the arguments of [`Process::spawn`](crate::Process::spawn): the
    /// child receives this connection's fd. Anywhere else this is an error.
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        let index = pass(self).map_err(S::Error::custom)?;
        serializer.serialize_newtype_struct(PASSED_FD, &index)
    }
}

impl<'de> Deserialize<'de> for Connection {
    /// Only in a spawned child, from its arguments; see `Serialize`.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(rename = "multiproc::PassedFd")]
        struct Index(u32);
        let Index(index) = Index::deserialize(deserializer)?;
        take(index).map(Connection::from).map_err(D::Error::custom)
    }
}
