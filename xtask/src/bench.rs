//! `cargo xtask bench`: runs the criterion benches and writes `docs/benchmarks.md` (and
//! `docs/bench-concurrent.svg`) from criterion's estimates and the recorded allocation
//! counts.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::Value;

/// One criterion result.
#[derive(Debug, Clone)]
struct Estimate {
    /// Median time per iteration, ns.
    median: f64,
    /// The median's 95 % confidence interval, ns.
    low: f64,
    high: f64,
}

/// The Go original's figures on this machine kind (DESIGN.md §7), ns/op and allocs/op.
const GO: &[(&str, &str, f64, f64)] = &[
    (
        "FetchWithCache_CacheHit",
        "fetch_hit/echocache/u64",
        14.6,
        0.0,
    ),
    (
        "FetchWithCache_CacheMiss",
        "fetch_miss/echocache/arc_str",
        550.0,
        5.0,
    ),
    (
        "FetchWithCache_Concurrent",
        "fetch_concurrent/echocache/2",
        18.8,
        0.0,
    ),
    (
        "FetchWithLazyRefresh_CacheHit",
        "lazy/lazy_hit/echocache/arc_str",
        96.7,
        0.0,
    ),
    (
        "FetchWithLazyRefresh_CacheHitStale",
        "lazy/lazy_stale_hit/echocache/arc_str",
        265.0,
        3.0,
    ),
    ("LRUCache_Get", "store/lru_get/arc_str", 14.3, 0.0),
    ("LRUCache_Set", "store/lru_set/arc_str", 14.7, 0.0),
    (
        "LRUExpirableCache_Get",
        "store/expiring_lru_get/arc_str",
        57.5,
        0.0,
    ),
    (
        "LRUExpirableCache_Set",
        "store/expiring_lru_set/arc_str",
        97.0,
        0.0,
    ),
    ("SingleCache_Get", "store/single_get/arc_str", 31.9, 0.0),
    ("SingleCache_Set", "store/single_set/arc_str", 56.2, 0.0),
];

pub(crate) fn run(quick: bool) -> Result<(), String> {
    let root = crate::workspace_root();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let _ = std::fs::remove_dir_all(target.join("criterion"));
    let _ = std::fs::remove_file(target.join("echocache-bench").join("figures.json"));
    let mut env = vec![];
    if quick {
        env.push(("ECHOCACHE_BENCH_QUICK", "1"));
    }
    crate::cargo(
        &["bench", "-p", "echocache-benches", "--bench", "main"],
        &env,
    )?;
    let estimates = read_estimates(&target.join("criterion"))?;
    let figures: BTreeMap<String, f64> =
        std::fs::read(target.join("echocache-bench").join("figures.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
    let docs = root.join("docs");
    std::fs::create_dir_all(&docs).map_err(|e| e.to_string())?;
    let chart = chart(&estimates, &docs.join("bench-concurrent.svg"));
    let report = report(&estimates, &figures, quick, chart.is_ok());
    std::fs::write(docs.join("benchmarks.md"), report).map_err(|e| e.to_string())?;
    if let Err(e) = chart {
        eprintln!("xtask: no chart: {e}");
    }
    eprintln!("xtask: wrote docs/benchmarks.md");
    Ok(())
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

fn report(
    est: &BTreeMap<String, Estimate>,
    figures: &BTreeMap<String, f64>,
    quick: bool,
    chart: bool,
) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# Benchmarks\n");
    let _ = writeln!(
        md,
        "Written by `cargo xtask bench{}` — do not edit by hand. Machine: {}. Criterion medians with their 95 % confidence interval; \
         allocations per operation counted by a counting global allocator in the same binary. \
         Memory hits are polled directly (no executor); misses run inside a task on a current-thread tokio runtime; \
         concurrent and single-flight figures use a 2-worker multi-thread runtime.\n",
        if quick { " --quick" } else { "" },
        machine()
    );
    if quick {
        let _ = writeln!(
            md,
            "**Quick mode**: short measurement times; figures are indicative.\n"
        );
    }

    let _ = writeln!(md, "## Against the Go original\n");
    let _ = writeln!(
        md,
        "The Go figures are those of DESIGN.md §7 (same machine kind, Go 1.23, GOMAXPROCS=2), not re-measured in this run.\n"
    );
    let _ = writeln!(
        md,
        "| Go benchmark | Go ns/op | Go allocs/op | echocache bench | echocache | allocs/op | ratio (echocache / Go) |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|");
    for (go_name, id, go_ns, go_allocs) in GO {
        let (ours, ratio) = match est.get(*id) {
            Some(e) => (ns(e.median), format!("{:.2}×", e.median / go_ns)),
            None => ("not run".into(), "—".into()),
        };
        let allocs = figures
            .get(&format!("allocs/{id}"))
            .map_or("—".to_owned(), |a| format!("{a:.2}"));
        let _ = writeln!(
            md,
            "| {go_name} | {go_ns} | {go_allocs} | `{id}` | {ours} | {allocs} | {ratio} |"
        );
    }

    let mut groups: BTreeMap<&str, Vec<(&str, &Estimate)>> = BTreeMap::new();
    for (id, e) in est {
        let (group, rest) = id.split_once('/').unwrap_or((id.as_str(), ""));
        groups.entry(group).or_default().push((rest, e));
    }
    for (group, rows) in &groups {
        let _ = writeln!(md, "\n## `{group}`\n");
        let base = rows
            .iter()
            .find(|(name, _)| name.starts_with("echocache"))
            .map(|(_, e)| e.median);
        let _ = writeln!(
            md,
            "| bench | median | 95 % CI | allocs/op | vs echocache |"
        );
        let _ = writeln!(md, "|---|---|---|---|---|");
        for (name, e) in rows {
            let allocs = figures
                .get(&format!("allocs/{group}/{name}"))
                .map_or("—".to_owned(), |a| format!("{a:.2}"));
            let vs = base.map_or("—".to_owned(), |b| format!("{:.2}×", e.median / b));
            let _ = writeln!(
                md,
                "| `{name}` | {} | {} – {} | {allocs} | {vs} |",
                ns(e.median),
                ns(e.low),
                ns(e.high)
            );
        }
    }
    let others: Vec<_> = figures
        .iter()
        .filter(|(k, _)| !k.starts_with("allocs/"))
        .collect();
    if !others.is_empty() {
        let _ = writeln!(md, "\n## Other figures\n");
        for (k, v) in others {
            let _ = writeln!(md, "- `{k}`: {v}");
        }
    }
    if chart {
        let _ = writeln!(
            md,
            "\n## Hit throughput vs tasks\n\n![hit throughput vs tasks](bench-concurrent.svg)"
        );
    }
    md
}

fn chart(est: &BTreeMap<String, Estimate>, path: &Path) -> Result<(), String> {
    use plotters::prelude::*;
    let libs = ["echocache", "moka", "quick_cache"];
    let tasks = [1u32, 2, 4, 8];
    let series: Vec<(&str, Vec<(u32, f64)>)> = libs
        .iter()
        .map(|lib| {
            let points = tasks
                .iter()
                .filter_map(|t| {
                    est.get(&format!("fetch_concurrent/{lib}/{t}"))
                        .map(|e| (*t, 1_000.0 / e.median)) // million ops per second
                })
                .collect();
            (*lib, points)
        })
        .collect();
    let max = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|(_, v)| *v))
        .fold(0.0, f64::max);
    if max == 0.0 {
        return Err("no fetch_concurrent results".into());
    }
    let root = SVGBackend::new(path, (720, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Hit throughput vs tasks (2-worker runtime)",
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(1u32..8u32, 0.0..max * 1.15)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("tasks")
        .y_desc("million hits / s")
        .draw()
        .map_err(|e| e.to_string())?;
    let colors = [RED, BLUE, GREEN];
    for ((lib, points), color) in series.iter().zip(colors) {
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(|e| e.to_string())?
            .label(*lib)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        chart
            .draw_series(points.iter().map(|p| Circle::new(*p, 3, color.filled())))
            .map_err(|e| e.to_string())?;
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())?;
    Ok(())
}
