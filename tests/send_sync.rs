//! Which public types may cross or be shared between threads, checked at compile time (so a
//! change that makes one of them `!Send` or `!Sync`, or one that makes the single-threaded
//! `Reactor` shareable, fails to build). Nothing runs.
#![allow(dead_code)]

use std::marker::PhantomData;
use std::rc::Rc;

use multiproc::*;

/// `SendProbe::<T>::YES` is `true` when `T: Send` (the inherent constant, found before the
/// trait's, exists only then) and `false` otherwise; likewise `SyncProbe`.
struct SendProbe<T: ?Sized>(PhantomData<T>);
struct SyncProbe<T: ?Sized>(PhantomData<T>);

trait NotSend {
    const YES: bool = false;
}
trait NotSync {
    const YES: bool = false;
}
impl<T: ?Sized> NotSend for SendProbe<T> {}
impl<T: ?Sized> NotSync for SyncProbe<T> {}
impl<T: ?Sized + Send> SendProbe<T> {
    const YES: bool = true;
}
impl<T: ?Sized + Sync> SyncProbe<T> {
    const YES: bool = true;
}

/// `send_sync!(T: Send Sync)`, `send_sync!(T: !Send !Sync)`, ...
macro_rules! send_sync {
    ($($t:ty: $send:tt $sync:tt;)*) => {$(
        const _: () = assert!(SendProbe::<$t>::YES == send_sync!(@ $send));
        const _: () = assert!(SyncProbe::<$t>::YES == send_sync!(@ $sync));
    )*};
    (@ Send) => { true };
    (@ Sync) => { true };
    (@ (!Send)) => { false };
    (@ (!Sync)) => { false };
}

send_sync! {
    Encoding: Send Sync;
    Error: Send Sync;
    ErrorKind: Send Sync;
    // Ends are used through `&mut self`; nothing inside is shared behind `&self`.
    Connection: Send Sync;
    Pipe: Send Sync;
    Address: Send Sync;
    Client: Send Sync;
    Digest: Send Sync;
    Listener: Send Sync;
    ActiveChild: Send Sync;
    Command: Send Sync;
    CurrentProcess: Send Sync;
    ParentProcess: Send Sync;
    // One thread may join while another terminates.
    Process: Send Sync;
    Sentinel: Send Sync;
    // Items are encoded by the thread that puts and made afresh by the one that gets: no
    // `T` is ever shared, so even a queue of `Rc`s may be.
    Queue<u32>: Send Sync;
    Queue<Rc<u32>>: Send Sync;
    SimpleQueue<Rc<u32>>: Send Sync;
    JoinableQueue<Rc<u32>>: Send Sync;
    // The reactor runs on one thread; other threads reach it through a handle.
    Reactor: (!Send) (!Sync);
    Context<'static>: (!Send) (!Sync);
    ReactorHandle: Send Sync;
    TimerId: Send Sync;
    Token: Send Sync;
    WatchId: Send Sync;
    Key: Send Sync;
    // A wait set holds its values: as `Send`/`Sync` as they are.
    WaitSet<u32>: Send Sync;
    WaitSet<Rc<u32>>: (!Send) (!Sync);
}
