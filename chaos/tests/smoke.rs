//! A short run of the chaos load (about 5 s, no faults) against the servers of
//! `cargo xtask test`: the harness works end to end, the caches answer every operation
//! with the right key, nothing panics, and nothing is left in flight after shutdown.
//!
//! It also fails on a value older than a completed invalidation (a fetch that started after
//! `invalidate()` returned must not get a value loaded before it).

use std::collections::HashMap;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn url(var: &str, default: &str) -> String {
    std::env::var(var)
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

#[test]
#[ignore = "needs Redis and NATS: cargo xtask test"]
fn a_short_load_without_faults_runs_clean() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_echocache-chaos"))
        .args([
            "--redis",
            &url("ECHOCACHE_REDIS_URL", "redis://127.0.0.1:6379"),
        ])
        .args([
            "--nats",
            &url("ECHOCACHE_NATS_URL", "nats://127.0.0.1:4222"),
        ])
        .args(["--seconds", "5", "--tasks", "32", "--recovery-seconds", "1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run echocache-chaos");
    let mut stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the chaos load did not stop within 30 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = reader.join().expect("stdout reader");
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut stderr);
    }
    let summary = text
        .lines()
        .find_map(|l| l.strip_prefix("chaos: summary "))
        .unwrap_or_else(|| panic!("no summary ({status}); stderr:\n{stderr}\nstdout:\n{text}"));
    let figures: HashMap<&str, u64> = summary
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k, v.parse().expect("a number")))
        .collect();
    let get = |k: &str| {
        *figures
            .get(k)
            .unwrap_or_else(|| panic!("no `{k}` in {summary}"))
    };
    assert!(get("ops") > 1000, "too few operations: {summary}\n{text}");
    assert_eq!(get("errors"), 0, "{text}");
    assert_eq!(get("panics"), 0, "{text}");
    assert_eq!(get("wrong_key"), 0, "{text}");
    assert_eq!(get("older_than_invalidated"), 0, "{text}");
    assert_eq!(get("stuck_tasks"), 0, "{text}");
    assert_eq!(get("left_after_shutdown"), 0, "{text}");
}
