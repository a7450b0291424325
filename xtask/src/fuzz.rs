//! `cargo xtask fuzz [--seconds N] [--asan] [TARGET…]`: runs each fuzz target of `fuzz/`
//! with cargo-fuzz (libFuzzer) for N seconds (default 10), one after the other, and fails
//! when any of them finds a crash.
//!
//! - cargo-fuzz is installed (`cargo install cargo-fuzz --locked`) when missing.
//! - cargo-fuzz passes nightly `-Z` flags to rustc; `RUSTC_BOOTSTRAP=1` lets the stable
//!   toolchain accept them, for these commands only.
//! - Without `--asan` the targets are built without a sanitizer: every crate of the
//!   workspace forbids `unsafe`, and libFuzzer runs about eight times more inputs per
//!   second that way (the checks measure memory with their own counting allocator).
//!   `--asan` builds with AddressSanitizer, as cargo-fuzz does by default.
//! - Each target starts from the committed seeds in `crates/<crate>/tests/corpus/<target>/`
//!   and a working corpus in `fuzz/target/run-corpus/<target>/`, which keeps what earlier
//!   runs found;
//!   the committed seeds are never written to.
//! - A crash is saved by libFuzzer under `fuzz/artifacts/<target>/`; the message says how
//!   to reproduce it and how to keep it as a regression seed (the corpus tests replay every
//!   file of those directories in `cargo test`).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The targets, in the order they run.
const TARGETS: &[&str] = &["envelope_msgpack", "envelope_json", "nats_key"];

/// The input size libFuzzer may grow to: large enough for the envelope's hostile shapes
/// and for NATS keys past the 512-byte hashing threshold.
const MAX_LEN: &str = "-max_len=8192";

const USAGE: &str = "usage: cargo xtask fuzz [--seconds N] [--asan] [TARGET…]

Runs each fuzz target (envelope_msgpack, envelope_json, nats_key) for N seconds
(default 10) with cargo-fuzz and libFuzzer; fails if any target finds a crash.
  --asan   build with AddressSanitizer (slower; default: no sanitizer)";

/// What one run of one target did.
#[derive(Debug, Default)]
struct Outcome {
    target: String,
    runs: Option<u64>,
    execs_per_sec: Option<u64>,
    peak_rss_mb: Option<u64>,
    corpus: usize,
    crash: Option<String>,
}

/// Parsed command line.
#[derive(Debug)]
struct Options {
    seconds: u64,
    asan: bool,
    targets: Vec<String>,
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut options = Options {
        seconds: 10,
        asan: false,
        targets: Vec::new(),
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--seconds" => {
                let value = args.next().ok_or("--seconds needs a value")?;
                options.seconds = value
                    .parse()
                    .ok()
                    .filter(|&s| s > 0)
                    .ok_or_else(|| format!("--seconds: `{value}` is not a positive integer"))?;
            }
            "--asan" => options.asan = true,
            "-h" | "--help" => return Err(USAGE.to_owned()),
            target if TARGETS.contains(&target) => options.targets.push(target.to_owned()),
            other => return Err(format!("unknown argument `{other}`\n\n{USAGE}")),
        }
    }
    if options.targets.is_empty() {
        options.targets = TARGETS.iter().map(|t| (*t).to_owned()).collect();
    }
    Ok(options)
}

pub(crate) fn run(args: &[String]) -> Result<(), String> {
    let options = parse(args)?;
    let fuzz_dir = crate::workspace_root().join("fuzz");
    ensure_cargo_fuzz()?;
    let sanitizer = if options.asan { "address" } else { "none" };

    // Build every target first, so that the time limit counts fuzzing only.
    cargo_fuzz(&fuzz_dir, &["build", "--sanitizer", sanitizer])?;

    let mut outcomes = Vec::new();
    for target in &options.targets {
        outcomes.push(run_target(&fuzz_dir, target, sanitizer, options.seconds)?);
    }

    println!("{}", summary(&outcomes, options.seconds, sanitizer));
    let crashed: Vec<&Outcome> = outcomes.iter().filter(|o| o.crash.is_some()).collect();
    if crashed.is_empty() {
        Ok(())
    } else {
        for outcome in &crashed {
            eprintln!("{}", outcome.crash.as_deref().unwrap_or_default());
        }
        Err(format!(
            "fuzz: {} target(s) found a crash: {}",
            crashed.len(),
            crashed
                .iter()
                .map(|o| o.target.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }
}

/// Installs cargo-fuzz unless `cargo fuzz` already answers.
fn ensure_cargo_fuzz() -> Result<(), String> {
    let cargo = cargo();
    let present = Command::new(&cargo)
        .args(["fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if present {
        return Ok(());
    }
    eprintln!("xtask: cargo-fuzz is missing: cargo install cargo-fuzz --locked");
    crate::cargo(&["install", "cargo-fuzz", "--locked"], &[])
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// `cargo fuzz <args>` in `fuzz_dir`, with the stable toolchain accepting `-Z` flags.
fn cargo_fuzz(fuzz_dir: &Path, args: &[&str]) -> Result<(), String> {
    eprintln!(
        "xtask: (in fuzz/) RUSTC_BOOTSTRAP=1 cargo fuzz {}",
        args.join(" ")
    );
    let status = Command::new(cargo())
        .arg("fuzz")
        .args(args)
        .current_dir(fuzz_dir)
        .env("RUSTC_BOOTSTRAP", "1")
        .status()
        .map_err(|e| format!("could not run cargo fuzz: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`cargo fuzz {}` failed ({status})", args.join(" ")))
    }
}

/// The committed seeds of a target: they live beside the test that replays them, in the
/// crate they test, so that the packaged crate's tests find them too.
fn seed_dir(fuzz_dir: &Path, target: &str) -> PathBuf {
    let krate = if target == "nats_key" {
        "echocache-nats"
    } else {
        "echocache-core"
    };
    fuzz_dir
        .join("../crates")
        .join(krate)
        .join("tests/corpus")
        .join(target)
}

/// Fuzzes one target for `seconds`; libFuzzer's output goes to a log file.
fn run_target(
    fuzz_dir: &Path,
    target: &str,
    sanitizer: &str,
    seconds: u64,
) -> Result<Outcome, String> {
    let seeds = seed_dir(fuzz_dir, target);
    let work = fuzz_dir.join("target").join("run-corpus").join(target);
    let logs = fuzz_dir.join("target").join("logs");
    let artifacts = fuzz_dir.join("artifacts").join(target);
    for dir in [&work, &logs, &artifacts] {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let log_path = logs.join(format!("{target}.log"));
    let log =
        std::fs::File::create(&log_path).map_err(|e| format!("{}: {e}", log_path.display()))?;
    let before = artifact_files(&artifacts);

    eprintln!(
        "xtask: fuzzing {target} for {seconds} s (log: {})",
        log_path.display()
    );
    let max_time = format!("-max_total_time={seconds}");
    let status = Command::new(cargo())
        .current_dir(fuzz_dir)
        .env("RUSTC_BOOTSTRAP", "1")
        .args(["fuzz", "run", "--sanitizer", sanitizer, target])
        .arg(&work)
        .arg(&seeds)
        .args([
            "--",
            &max_time,
            MAX_LEN,
            "-timeout=10",
            "-print_final_stats=1",
        ])
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log)
        .status()
        .map_err(|e| format!("could not run cargo fuzz: {e}"))?;

    let text = std::fs::read_to_string(&log_path).unwrap_or_default();
    let stat = |name: &str| -> Option<u64> {
        text.lines()
            .rev()
            .find_map(|line| line.strip_prefix(&format!("stat::{name}:")))
            .and_then(|v| v.trim().parse().ok())
    };
    let mut outcome = Outcome {
        target: target.to_owned(),
        runs: stat("number_of_executed_units"),
        execs_per_sec: stat("average_exec_per_sec"),
        peak_rss_mb: stat("peak_rss_mb"),
        corpus: std::fs::read_dir(&work).map_or(0, Iterator::count),
        crash: None,
    };
    if !status.success() {
        let new: Vec<PathBuf> = artifact_files(&artifacts)
            .into_iter()
            .filter(|path| !before.contains(path))
            .collect();
        outcome.crash = Some(crash_report(target, &text, &new, &log_path));
    }
    Ok(outcome)
}

fn artifact_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.sort();
    files
}

/// The panic message from libFuzzer's log, and how to reproduce and keep the input.
fn crash_report(target: &str, log: &str, artifacts: &[PathBuf], log_path: &Path) -> String {
    let mut out = format!(
        "xtask: fuzz target {target} failed (full log: {})\n",
        log_path.display()
    );
    let interesting: Vec<&str> = log
        .lines()
        .filter(|line| {
            line.contains("panicked at")
                || line.starts_with("==")
                || line.contains("ERROR")
                || line.contains("deadly signal")
        })
        .take(12)
        .collect();
    let mut panic_lines = log.lines().skip_while(|line| !line.contains("panicked at"));
    for line in interesting {
        let _ = writeln!(out, "  {line}");
    }
    if let Some(first) = panic_lines.nth(1) {
        let _ = writeln!(out, "  {first}");
    }
    for artifact in artifacts {
        let _ = writeln!(
            out,
            "  input: {}\n  reproduce: (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run {target} {})\n  \
             once fixed, keep it as a regression seed: cp {} {}/",
            artifact.display(),
            artifact.display(),
            artifact.display(),
            seed_dir(Path::new("fuzz"), target).display()
        );
    }
    out
}

/// A Markdown table of the runs, for `docs/` and closing notes.
fn summary(outcomes: &[Outcome], seconds: u64, sanitizer: &str) -> String {
    let mut md = format!(
        "\nfuzz: {seconds} s per target, sanitizer {sanitizer}\n\n\
         | target | runs | execs/s | working corpus | peak RSS | result |\n\
         |---|---:|---:|---:|---:|---|\n"
    );
    let show = |v: Option<u64>| v.map_or_else(|| "?".to_owned(), |v| v.to_string());
    for o in outcomes {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} MB | {} |",
            o.target,
            show(o.runs),
            show(o.execs_per_sec),
            o.corpus,
            show(o.peak_rss_mb),
            if o.crash.is_some() {
                "CRASH"
            } else {
                "no crash"
            }
        );
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn parses_seconds_targets_and_asan() {
        let o = parse(&args(&[])).unwrap();
        assert_eq!((o.seconds, o.asan, o.targets.len()), (10, false, 3));
        let o = parse(&args(&["--seconds", "30", "--asan", "nats_key"])).unwrap();
        assert_eq!((o.seconds, o.asan), (30, true));
        assert_eq!(o.targets, ["nats_key"]);
        assert!(parse(&args(&["--seconds"])).is_err());
        assert!(parse(&args(&["--seconds", "0"])).is_err());
        assert!(parse(&args(&["--seconds", "x"])).is_err());
        assert!(parse(&args(&["nope"])).is_err());
    }

    #[test]
    fn the_summary_shows_each_target() {
        let md = summary(
            &[Outcome {
                target: "nats_key".into(),
                runs: Some(1000),
                execs_per_sec: Some(100),
                peak_rss_mb: Some(60),
                corpus: 7,
                crash: None,
            }],
            10,
            "none",
        );
        assert!(
            md.contains("| nats_key | 1000 | 100 | 7 | 60 MB | no crash |"),
            "{md}"
        );
    }
}
