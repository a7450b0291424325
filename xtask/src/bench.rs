//! `cargo xtask bench`: runs the criterion benches and writes `docs/benchmarks.md`
//! (`report.rs`), `docs/bench-concurrent.svg` (`chart.rs`) and README.md's performance
//! table (`readme.rs`) from criterion's estimates and the recorded allocation counts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::services::{Nats, Redis, Service};

mod chart;
mod fleet;
mod outage;
mod readme;
mod report;
mod tiered;

/// One criterion result.
#[derive(Debug, Clone)]
struct Estimate {
    /// Median time per iteration, ns.
    median: f64,
    /// The median's 95 % confidence interval, ns.
    low: f64,
    high: f64,
}

pub(crate) fn run(quick: bool) -> Result<(), String> {
    let root = crate::workspace_root();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let _ = std::fs::remove_dir_all(target.join("criterion"));
    let _ = std::fs::remove_file(target.join("echocache-bench").join("figures.json"));
    // The backend benches need Redis and NATS: found or started as for `cargo xtask test`,
    // and kept up until the benches end. Without one, its benches are skipped (the bench
    // says so) and the report says "not measured".
    let redis = service("Redis", Redis::find_or_start());
    let nats = service("NATS with JetStream", Nats::find_or_start());
    let mut env = vec![];
    if quick {
        env.push(("ECHOCACHE_BENCH_QUICK", "1"));
    }
    if let Some(redis) = &redis {
        env.push(("ECHOCACHE_REDIS_URL", redis.url.as_str()));
    }
    if let Some(nats) = &nats {
        env.push(("ECHOCACHE_NATS_URL", nats.url.as_str()));
    }
    let ran = crate::cargo(
        &["bench", "-p", "echocache-benches", "--bench", "main"],
        &env,
    );
    drop((redis, nats));
    ran?;
    let estimates = read_estimates(&target.join("criterion"))?;
    let figures: BTreeMap<String, f64> =
        std::fs::read(target.join("echocache-bench").join("figures.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
    let docs = root.join("docs");
    std::fs::create_dir_all(&docs).map_err(|e| e.to_string())?;
    let chart = chart::chart(&estimates, &docs.join("bench-concurrent.svg"));
    let report = report::report(&estimates, &figures, quick, chart.is_ok());
    std::fs::write(docs.join("benchmarks.md"), report).map_err(|e| e.to_string())?;
    if let Err(e) = chart {
        eprintln!("xtask: no chart: {e}");
    }
    readme::write(&root.join("README.md"), &estimates, &figures, quick)?;
    eprintln!("xtask: wrote docs/benchmarks.md and README.md's performance table");
    Ok(())
}

/// The service, or `None` (with a message) when there is none.
fn service(name: &str, found: Result<Service, String>) -> Option<Service> {
    match found {
        Ok(service) => {
            eprintln!("xtask: {name}: {} ({})", service.url, service.origin);
            Some(service)
        }
        Err(e) => {
            eprintln!("xtask: no {name} for the backend benches, which will be skipped: {e}");
            None
        }
    }
}

fn read_estimates(dir: &Path) -> Result<BTreeMap<String, Estimate>, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n == "new") {
                    if let Some((id, est)) = read_one(&path) {
                        out.insert(id, est);
                    }
                } else {
                    stack.push(path);
                }
            }
        }
    }
    if out.is_empty() {
        return Err(format!("no criterion results under {}", dir.display()));
    }
    Ok(out)
}

fn read_one(dir: &Path) -> Option<(String, Estimate)> {
    let bench: Value =
        serde_json::from_slice(&std::fs::read(dir.join("benchmark.json")).ok()?).ok()?;
    let est: Value =
        serde_json::from_slice(&std::fs::read(dir.join("estimates.json")).ok()?).ok()?;
    let id = bench.get("full_id")?.as_str()?.to_owned();
    let median = &est["median"];
    Some((
        id,
        Estimate {
            median: median["point_estimate"].as_f64()?,
            low: median["confidence_interval"]["lower_bound"].as_f64()?,
            high: median["confidence_interval"]["upper_bound"].as_f64()?,
        },
    ))
}

fn ns(v: f64) -> String {
    if v >= 1_000_000.0 {
        format!("{:.2} ms", v / 1_000_000.0)
    } else if v >= 1_000.0 {
        format!("{:.2} µs", v / 1_000.0)
    } else {
        format!("{v:.1} ns")
    }
}

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let rustc = std::process::Command::new("rustc")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    format!("{model}, {cores} cores available; {rustc}")
}

fn median(est: &BTreeMap<String, Estimate>, id: &str) -> Option<f64> {
    est.get(id).map(|e| e.median)
}
