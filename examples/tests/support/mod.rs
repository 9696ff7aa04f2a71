//! What the examples' tests share: running a compiled example and reading its
//! `name: value` summary.
#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The command for an example binary, which cargo builds before the integration tests:
/// `target/<profile>/examples/<name>`, next to this test's `target/<profile>/deps/`.
pub fn cmd_for_example(name: &str) -> Command {
    let mut path = std::env::current_exe().expect("test binary path");
    path.pop(); // the test binary
    if path.ends_with("deps") {
        path.pop();
    }
    let exe = path
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(exe.exists(), "example binary not built: {}", exe.display());
    Command::new(exe)
}

/// What a run printed: its summary (stdout) by name, and its log (stderr).
pub struct Run {
    pub summary: HashMap<String, u64>,
    pub log: String,
}

impl Run {
    /// A value of the summary.
    pub fn get(&self, name: &str) -> u64 {
        match self.summary.get(name) {
            Some(value) => *value,
            None => panic!("no {name:?} in the summary {:?}", self.summary),
        }
    }
}

/// Runs example `name` with `args` (and a timeout of its own, so a hang fails instead of
/// blocking); expects success within `within` and returns what it printed.
pub fn run(name: &str, args: &[&str], within: Duration) -> Run {
    let started = Instant::now();
    let output = cmd_for_example(name)
        .args(args)
        .args(["--timeout-secs", "60"])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|err| panic!("run the {name} example: {err}"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let log = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "{name} failed with {}\nstdout:\n{stdout}\nstderr:\n{log}",
        output.status
    );
    assert!(
        started.elapsed() < within,
        "{name} took {:?}",
        started.elapsed()
    );
    let summary = stdout
        .lines()
        .filter_map(|line| line.split_once(": "))
        .map(|(key, value)| {
            let value = value
                .trim()
                .parse()
                .unwrap_or_else(|_| panic!("a number: {line_value}", line_value = value));
            (key.to_string(), value)
        })
        .collect();
    Run { summary, log }
}
