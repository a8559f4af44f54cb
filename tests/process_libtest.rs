//! Spawn from libtest's own threaded harness.
use multiproc::{Connection, Pipe, Process};

fn double(mut conn: Connection) {
    let n: u64 = conn.recv().unwrap();
    println!("child output line");
    conn.send(&(n * 2)).unwrap();
}

#[test]
fn spawn_from_libtest() {
    multiproc::init();
    let (mut parent, child) = Pipe::new().unwrap();
    let mut p = Process::spawn(double, child);
    p.start().unwrap();
    parent.send(&21u64).unwrap();
    assert_eq!(parent.recv::<u64>().unwrap(), 42);
    assert_eq!(p.join().unwrap(), 0);
}

#[test]
fn another() {
    multiproc::init();
    let mut p = Process::spawn(|x: i32| std::process::exit(x), 9);
    p.start().unwrap();
    assert_eq!(p.join().unwrap(), 9);
}
