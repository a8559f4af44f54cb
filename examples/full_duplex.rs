//! Full-duplex pipe: parent and child both send and receive on their own end.
//!
//! A line-for-line port of the tutorial's Python program
//! (`../shared/seeds/000_95be7ad0c26243be.txt`, "Full Duplex Pipe"):
//!
//! ```python
//! def child_process(conn):
//!     print("[Child] Waiting for a message from parent...")
//!     message = conn.recv()
//!     print(f"[Child] Received: {message}")
//!     response = "Hello from Child!"
//!     time.sleep(2)  # Simulate some work
//!     conn.send(response)
//!     print("[Child] Response sent!")
//!
//! parent_conn, child_conn = multiprocessing.Pipe()
//! process = multiprocessing.Process(target=child_process, args=(child_conn,))
//! process.start()
//! print("[Parent] Sending a message to child...")
//! parent_conn.send("Hello from Parent!")
//! response = parent_conn.recv()
//! print(f"[Parent] Received: {response}")
//! process.join()
//! print("Communication complete!")
//! ```
//!
//! Run it with `cargo run --release --example full_duplex`.

use std::thread;
use std::time::Duration;

use multiproc::{Connection, Pipe, Process};

// Runs in a spawned child (a fresh copy of this executable), with `child_conn` passed to
// it, as `Process(target=child_process, args=(child_conn,))` does.
fn child_process(mut conn: Connection) {
    println!("[Child] Waiting for a message from parent...");
    let message: String = conn.recv().expect("recv"); // Receive message from parent
    println!("[Child] Received: {message}");

    let response = "Hello from Child!";
    thread::sleep(Duration::from_secs(2)); // Simulate some work
    conn.send(response).expect("send"); // Send response back to parent
    println!("[Child] Response sent!");
}

fn main() -> multiproc::Result<()> {
    multiproc::init(); // in the spawned child, runs child_process and exits here
    let (mut parent_conn, child_conn) = Pipe::new()?; // Create a duplex pipe

    let mut process = Process::spawn(child_process, child_conn);
    process.start()?;

    // Parent process sends a message
    println!("[Parent] Sending a message to child...");
    parent_conn.send("Hello from Parent!")?;

    // Wait for a response
    let response: String = parent_conn.recv()?;
    println!("[Parent] Received: {response}");

    process.join()?; // Wait for the child process to complete
    println!("Communication complete!");
    Ok(())
}
