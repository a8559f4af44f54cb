//! The examples run and print what the Python originals print.
//!
//! `cargo test` builds the examples next to this test binary (`target/<profile>/examples`),
//! so these tests run the real executables as a user would.

use std::path::PathBuf;
use std::process::Command;

fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // target/<profile>/deps/examples-<hash> -> target/<profile>/examples/<name>
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target dir");
    dir.join("examples").join(name)
}

fn run(name: &str) -> Result<Vec<String>, Box<dyn std::error::Error>> {
    let path = example(name);
    if !path.exists() {
        return Err(format!(
            "{} is not built: plain `cargo test` builds the examples; after `cargo test --test \
             examples` alone, run `cargo build --examples` first",
            path.display()
        )
        .into());
    }
    let out = Command::new(path).output()?;
    let stdout = String::from_utf8(out.stdout)?;
    assert!(
        out.status.success(),
        "{name} failed: {:?}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(stdout.lines().map(str::to_owned).collect())
}

fn position(lines: &[String], line: &str) -> usize {
    lines
        .iter()
        .position(|l| l == line)
        .unwrap_or_else(|| panic!("missing {line:?} in {lines:?}"))
}

#[test]
fn full_duplex_prints_the_tutorial_lines() -> Result<(), Box<dyn std::error::Error>> {
    let lines = run("full_duplex")?;
    let expected = [
        "[Child] Waiting for a message from parent...",
        "[Child] Received: Hello from Parent!",
        "[Parent] Sending a message to child...",
        "[Child] Response sent!",
        "[Parent] Received: Hello from Child!",
        "Communication complete!",
    ];
    let mut sorted_got = lines.clone();
    let mut sorted_expected: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
    sorted_got.sort();
    sorted_expected.sort();
    assert_eq!(sorted_got, sorted_expected, "the same six lines as Python");
    // The order causality fixes (the parent's and child's first lines race, as in Python).
    let at = |l: &str| position(&lines, l);
    assert!(at(expected[0]) < at(expected[1]));
    assert!(at(expected[2]) < at(expected[1]));
    assert!(at(expected[1]) < at(expected[4]));
    assert_eq!(
        lines.last().map(String::as_str),
        Some("Communication complete!")
    );
    Ok(())
}

#[test]
fn half_duplex_prints_the_tutorial_line() -> Result<(), Box<dyn std::error::Error>> {
    assert_eq!(run("half_duplex")?, ["Received: Hello from sender!"]);
    Ok(())
}

#[test]
fn select_loop_forwards_every_reading_over_tcp() -> Result<(), Box<dyn std::error::Error>> {
    let lines = run("select_loop")?;
    let forwarded: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with("[tcp client] worker"))
        .collect();
    assert_eq!(forwarded.len(), 15, "{lines:?}");
    for worker in 0..3 {
        for seq in 0..5 {
            let value = worker * 100 + seq;
            let want = format!("[tcp client] worker {worker} reading {seq}: {value}.0");
            assert!(lines.contains(&want), "missing {want:?} in {lines:?}");
        }
    }
    assert_eq!(
        lines.last().map(String::as_str),
        Some("done: 15 readings forwarded from 3 workers over TCP")
    );
    Ok(())
}

#[test]
fn sensor_detects_the_stall_and_the_death() -> Result<(), Box<dyn std::error::Error>> {
    let lines = run("sensor")?;
    let has = |prefix: &str| lines.iter().any(|l| l.starts_with(prefix));
    assert!(has("stall: no reading for"), "{lines:?}");
    assert!(
        has("sensor died (end of file) after reading #1999"),
        "{lines:?}"
    );
    assert!(has("sensor exit code: -9"), "{lines:?}");
    assert!(has("readings received: 2000 of 2000"), "{lines:?}");
    assert!(has("latency (us): p50 "), "{lines:?}");
    Ok(())
}
