//! `cargo xtask`: the project's own commands.
//!
//! - `cargo xtask test`: finds or starts Redis and NATS (with JetStream), then runs every
//!   test of the workspace, including the `#[ignore]`d ones that need those servers, and
//!   ends with one line `xtask: tests: N passed, M failed, K ignored (R runs)`
//!   (`test_run.rs`).
//! - `cargo xtask ci`: `cargo fmt --check`, clippy with `-D warnings`, rustdoc with
//!   `-D warnings`, `cargo xtask package`, then `cargo xtask test`.
//! - `cargo xtask package`: packs every publishable crate, then builds and runs its tests
//!   from the packaged sources (`package.rs`); `cargo xtask ci` runs it.
//! - `cargo xtask bench [--quick]`: the criterion benches, and `docs/benchmarks.md`.
//! - `cargo xtask chaos|soak [--seconds N]`: the bounded chaos and soak runs (`chaos.rs`).

mod bench;
mod chaos;
mod fuzz;
mod package;
mod services;
mod test_run;

use std::process::{Command, ExitCode};

use services::{Nats, Redis, Service};

const USAGE: &str = "usage: cargo xtask <command>

commands:
  test    find or start Redis and NATS, then run every test (including #[ignore]d ones)
  ci      fmt check, clippy -D warnings, rustdoc -D warnings, `package`, then `test`
  package pack every publishable crate, then build and run its tests from the package
  bench   run the criterion benches and write docs/benchmarks.md (--quick: short runs)
  services  find or start Redis and NATS, print their URLs, and keep them up until Ctrl-C
  chaos   [--seconds N] load on own Redis and NATS while killing and restarting them (60 s)
  soak    [--seconds N] LazyEchoCache soak: memory and in-flight/pending counts stay flat (120 s)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") => test_run::test(&args[1..]),
        Some("ci") => ci(),
        Some("package") => package::run(),
        Some("services") => services_only(),
        Some("bench") => bench::run(args.iter().any(|a| a == "--quick")),
        Some("fuzz") => fuzz::run(&args[1..]),
        Some("chaos") => chaos::chaos(&args[1..]),
        Some("soak") => chaos::soak(&args[1..]),
        Some("-h" | "--help" | "help") | None => {
            println!("{USAGE}");
            Ok(())
        }
        Some(other) => Err(format!("unknown command `{other}`\n\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Runs `cargo` with `args` (and extra environment), failing with a message on a non-zero
/// exit.
fn cargo(args: &[&str], env: &[(&str, &str)]) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("xtask: cargo {}", args.join(" "));
    let status = Command::new(&cargo)
        .args(args)
        .envs(env.iter().copied())
        .status()
        .map_err(|e| format!("could not run {cargo}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`cargo {}` failed ({status})", args.join(" ")))
    }
}

/// The workspace root (xtask lives one level below it).
fn workspace_root() -> std::path::PathBuf {
    let manifest = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or(manifest)
}

fn start_services() -> Result<(Service, Service), String> {
    let redis = Redis::find_or_start()?;
    eprintln!("xtask: Redis: {} ({})", redis.url, redis.origin);
    let nats = Nats::find_or_start()?;
    eprintln!("xtask: NATS with JetStream: {} ({})", nats.url, nats.origin);
    Ok((redis, nats))
}

fn ci() -> Result<(), String> {
    cargo(&["fmt", "--all", "--check"], &[])?;
    cargo(
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--all-features",
            "--",
            "-D",
            "warnings",
        ],
        &[],
    )?;
    cargo(
        &["doc", "--workspace", "--all-features", "--no-deps"],
        &[("RUSTDOCFLAGS", "-D warnings")],
    )?;
    package::run()?;
    test_run::test(&[])
}

fn services_only() -> Result<(), String> {
    let (redis, nats) = start_services()?;
    println!("ECHOCACHE_REDIS_URL={}", redis.url);
    println!("ECHOCACHE_NATS_URL={}", nats.url);
    println!("(press Enter to stop the services xtask started)");
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    drop((redis, nats));
    Ok(())
}
