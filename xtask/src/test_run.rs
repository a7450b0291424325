//! `cargo xtask test`: the workspace's tests with Redis and NATS found or started, the NATS
//! tests again on NATS ≥ 2.11, and the shuttle model checks; each run's output is passed
//! through as it comes and its `test result:` lines are added up, so that the command ends
//! with one line: `xtask: tests: N passed, M failed, K ignored (R runs)`.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use crate::services::Nats;
use crate::{start_services, workspace_root};

/// The sum of the `test result:` lines seen so far.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tally {
    pub(crate) passed: u64,
    pub(crate) failed: u64,
    pub(crate) ignored: u64,
    /// Test binaries (and doctest runs) that reported.
    pub(crate) runs: u64,
}

impl Tally {
    /// Adds a libtest summary line, e.g.
    /// `test result: ok. 5 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; …`.
    /// Other lines are ignored.
    pub(crate) fn add_line(&mut self, line: &str) {
        let Some(rest) = line.trim_start().strip_prefix("test result: ") else {
            return;
        };
        let count = |what: &str| {
            rest.split(';')
                .filter_map(|part| {
                    let part = part
                        .trim()
                        .trim_start_matches("ok.")
                        .trim_start_matches("FAILED.");
                    let (n, label) = part.trim().split_once(' ')?;
                    (label == what).then(|| n.parse::<u64>().ok()).flatten()
                })
                .next()
                .unwrap_or(0)
        };
        self.passed += count("passed");
        self.failed += count("failed");
        self.ignored += count("ignored");
        self.runs += 1;
    }

    pub(crate) fn line(&self) -> String {
        format!(
            "xtask: tests: {} passed, {} failed, {} ignored ({} runs)",
            self.passed, self.failed, self.ignored, self.runs
        )
    }
}

/// Runs `cargo args` with `env`, passing its output through and adding its test results
/// to `tally`.
fn cargo_test(args: &[&str], env: &[(&str, &str)], tally: &mut Tally) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("xtask: cargo {}", args.join(" "));
    let mut child = Command::new(&cargo)
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("could not run {cargo}: {e}"))?;
    if let Some(out) = child.stdout.take() {
        let stdout = std::io::stdout();
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            tally.add_line(&line);
            let mut lock = stdout.lock();
            let _ = writeln!(lock, "{line}");
        }
    }
    let status = child
        .wait()
        .map_err(|e| format!("could not wait for {cargo}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`cargo {}` failed ({status})", args.join(" ")))
    }
}

/// `cargo xtask test [extra cargo test args]`.
pub(crate) fn test(extra: &[String]) -> Result<(), String> {
    let mut tally = Tally::default();
    let result = run_all(extra, &mut tally);
    eprintln!("{}", tally.line());
    result
}

fn run_all(extra: &[String], tally: &mut Tally) -> Result<(), String> {
    let (redis, nats) = start_services()?;
    let env = [
        ("ECHOCACHE_REDIS_URL", redis.url.as_str()),
        ("ECHOCACHE_NATS_URL", nats.url.as_str()),
    ];
    // Every test binary runs, failing or not, so that one run reports every failure.
    let mut args = vec!["test", "--workspace", "--all-features", "--no-fail-fast"];
    args.extend(extra.iter().map(String::as_str));
    args.extend(["--", "--include-ignored"]);
    let result = cargo_test(&args, &env, tally);
    drop((redis, nats));
    result?;
    // The per-key TTL tests need NATS 2.11 or later: run the NATS tests once more there.
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    let newer = Nats::find_or_start_2_11(&target)?;
    eprintln!("xtask: NATS >= 2.11: {} ({})", newer.url, newer.origin);
    cargo_test(
        &[
            "test",
            "-p",
            "echocache-nats",
            "--all-features",
            "--test",
            "nats",
            "--",
            "--include-ignored",
        ],
        &[("ECHOCACHE_NATS_URL", newer.url.as_str())],
        tally,
    )?;
    // The model checks of the single-flight and the pending set (shuttle): a build of their
    // own, in its own target directory so that it does not invalidate the normal one.
    let rustflags = match std::env::var("RUSTFLAGS") {
        Ok(flags) if !flags.trim().is_empty() => format!("{flags} --cfg echocache_shuttle"),
        _ => "--cfg echocache_shuttle".to_owned(),
    };
    let shuttle_target = target.join("shuttle");
    cargo_test(
        &["test", "-p", "echocache-core", "--lib", "model_tests::"],
        &[
            ("RUSTFLAGS", rustflags.as_str()),
            ("CARGO_TARGET_DIR", &shuttle_target.to_string_lossy()),
        ],
        tally,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_lines_add_up() {
        let mut t = Tally::default();
        t.add_line("test result: ok. 5 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s");
        t.add_line("test result: FAILED. 21 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 1.01s");
        t.add_line("test foo ... ok");
        t.add_line("running 3 tests");
        assert_eq!(
            t,
            Tally {
                passed: 26,
                failed: 1,
                ignored: 1,
                runs: 2
            }
        );
        assert_eq!(
            t.line(),
            "xtask: tests: 26 passed, 1 failed, 1 ignored (2 runs)"
        );
    }
}
