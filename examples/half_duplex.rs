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

fn sender(mut conn: Connection) -> multiproc::Result<()> {
    conn.send("Hello from sender!")?; // Send a message
    conn.close(); // Close the write-only connection
    Ok(())
}

fn receiver(mut conn: Connection) -> multiproc::Result<()> {
    let message: String = conn.recv()?; // Receive a message
    println!("Received: {message}");
    conn.close(); // Close the read-only connection
    Ok(())
}

fn main() -> multiproc::Result<()> {
    let (recv_conn, sender_conn) = Pipe::half_duplex()?; // Create a half-duplex pipe

    let mut p1 = Process::fork(move || sender(sender_conn).expect("sender failed"));
    let mut p2 = Process::fork(move || receiver(recv_conn).expect("receiver failed"));

    p1.start()?;
    p2.start()?;

    p1.join()?;
    p2.join()?;
    Ok(())
}
