//! Half-duplex pipe: one process only sends, another only receives.
//!
//! A line-for-line port of the tutorial's Python program
//! (`../shared/seeds/000_95be7ad0c26243be.txt`, "Half-Duplex Pipe"):
//!
//! ```python
//! def sender(conn):
//!     conn.send("Hello from sender!")
//!     conn.close()
//!
//! def receiver(conn):
//!     message = conn.recv()
//!     print(f"Received: {message}")
//!     conn.close()
//!
//! recv_conn, sender_conn = Pipe(duplex=False)
//! p1 = Process(target=sender, args=(sender_conn,))
//! p2 = Process(target=receiver, args=(recv_conn,))
//! p1.start(); p2.start()
//! p1.join(); p2.join()
//! ```
//!
//! Run it with `cargo run --release --example half_duplex`.

use multiproc::{Connection, Pipe, Process};

// Each function runs in its own spawned child (a fresh copy of this executable), with its
// end of the pipe passed to it, as `Process(target=sender, args=(sender_conn,))` does.
fn sender(mut conn: Connection) {
    conn.send("Hello from sender!").expect("send"); // Send a message
    conn.close(); // Close the write-only connection
}

fn receiver(mut conn: Connection) {
    let message: String = conn.recv().expect("recv"); // Receive a message
    println!("Received: {message}");
    conn.close(); // Close the read-only connection
}

fn main() -> multiproc::Result<()> {
    multiproc::init(); // in a spawned child, runs its function and exits here
    let (recv_conn, sender_conn) = Pipe::half_duplex()?; // Create a half-duplex pipe

    let mut p1 = Process::spawn(sender, sender_conn);
    let mut p2 = Process::spawn(receiver, recv_conn);

    p1.start()?;
    p2.start()?;

    p1.join()?;
    p2.join()?;
    Ok(())
}
