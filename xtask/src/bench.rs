//! `cargo xtask bench`: runs the criterion benches and writes `docs/benchmarks.md` (and
//! `docs/bench-concurrent.svg`) from criterion's estimates and the recorded allocation
//! counts.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::services::{Nats, Redis, Service};

mod fleet;
mod outage;
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
    let chart = chart(&estimates, &docs.join("bench-concurrent.svg"));
    let report = report(&estimates, &figures, quick, chart.is_ok());
    std::fs::write(docs.join("benchmarks.md"), report).map_err(|e| e.to_string())?;
    if let Err(e) = chart {
        eprintln!("xtask: no chart: {e}");
    }
    eprintln!("xtask: wrote docs/benchmarks.md");
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

    targets(&mut md, est, figures);
    backends(&mut md, est, figures);
    fleet::section(&mut md, est, figures);
    outage::section(&mut md, figures);
    tiered::section(&mut md, est, figures);
    memory(&mut md, figures);

    let _ = writeln!(md, "\n## Every bench, by group");
    let mut groups: BTreeMap<&str, Vec<(&str, &Estimate)>> = BTreeMap::new();
    for (id, e) in est {
        let (group, rest) = id.split_once('/').unwrap_or((id.as_str(), ""));
        groups.entry(group).or_default().push((rest, e));
    }
    for (group, rows) in &groups {
        let _ = writeln!(md, "\n### `{group}`\n");
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
        .filter(|(k, _)| {
            ![
                "allocs/",
                "bytes_per_entry/",
                "redis_benchmark/",
                "ratio/",
                "interleaved/",
                "fleet/",
                "outage/",
                "tiered/",
            ]
            .iter()
            .any(|p| k.starts_with(p))
        })
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

/// The Go original's hit (ns), the reference of the memory hit targets.
const GO_HIT: f64 = 14.6;
/// The Go original's lazy hit (ns).
const GO_LAZY_HIT: f64 = 96.7;
/// The Go original's miss (ns; 542–553 measured).
const GO_MISS: f64 = 550.0;
/// Requests in flight in the backend throughput benches.
const IN_FLIGHT: &str = "in_flight_64";

fn median(est: &BTreeMap<String, Estimate>, id: &str) -> Option<f64> {
    est.get(id).map(|e| e.median)
}

fn verdict(holds: Option<bool>) -> &'static str {
    match holds {
        Some(true) => "holds",
        Some(false) => "**does not hold**",
        None => "not measured",
    }
}

/// Each DESIGN.md §7 target, with the figure of this run and whether it holds.
fn targets(md: &mut String, est: &BTreeMap<String, Estimate>, figures: &BTreeMap<String, f64>) {
    let m = |id: &str| median(est, id);
    let f = |id: &str| figures.get(id).copied();
    let allocs = |id: &str| f(&format!("allocs/{id}"));
    let ratio = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| a / b);
    let show_ns = |v: Option<f64>| v.map_or("—".to_owned(), ns);
    let show_x = |v: Option<f64>| v.map_or("—".to_owned(), |r| format!("{r:.2}×"));
    let mut rows: Vec<(String, String, Option<bool>)> = Vec::new();

    let u64_hit = m("fetch_hit/echocache/u64");
    rows.push((
        format!(
            "Memory hit through `EchoCache::fetch` (LruStore, `u64`) ≤ the Go hit, {GO_HIT} ns"
        ),
        show_ns(u64_hit),
        u64_hit.map(|v| v <= GO_HIT),
    ));
    let hit_ids = [
        "fetch_hit/echocache/u64",
        "fetch_hit/echocache/static_str",
        "fetch_hit/echocache/arc_str",
    ];
    let hit_allocs: Option<Vec<f64>> = hit_ids.iter().map(|id| allocs(id)).collect();
    rows.push((
        "Memory hit: 0 allocations (`u64`, `&'static str`, `Arc<str>`)".into(),
        hit_allocs.as_ref().map_or("—".into(), |a| {
            a.iter()
                .map(|v| format!("{v:.2}"))
                .collect::<Vec<_>>()
                .join(" / ")
        }),
        hit_allocs.map(|a| a.iter().all(|v| *v == 0.0)),
    ));
    let arc_hit = m("fetch_hit/echocache/arc_str");
    rows.push((
        format!(
            "Memory hit, `Arc<str>` ≤ 1.5 × {GO_HIT} = {:.1} ns",
            1.5 * GO_HIT
        ),
        show_ns(arc_hit),
        arc_hit.map(|v| v <= 1.5 * GO_HIT),
    ));
    let vs_moka = ratio(arc_hit, m("fetch_hit/moka/arc_str"));
    rows.push((
        "Memory hit (`Arc<str>`) faster than moka `future::Cache::get_with_by_ref`".into(),
        format!("{} of moka's", show_x(vs_moka)),
        vs_moka.map(|r| r < 1.0),
    ));
    let vs_quick = ratio(arc_hit, m("fetch_hit/quick_cache/arc_str"));
    rows.push((
        "Memory hit (`Arc<str>`) ≤ 1.3× quick_cache `sync::Cache::get_or_insert_async` hit".into(),
        show_x(vs_quick),
        vs_quick.map(|r| r <= 1.3),
    ));
    let lazy_hit = m("lazy/lazy_hit/echocache/arc_str");
    rows.push((
        format!(
            "`LazyEchoCache` fresh hit ≤ 0.3 × the Go lazy hit ({GO_LAZY_HIT} ns) = {:.1} ns",
            0.3 * GO_LAZY_HIT
        ),
        show_ns(lazy_hit),
        lazy_hit.map(|v| v <= 0.3 * GO_LAZY_HIT),
    ));
    let stale_hit = m("lazy/lazy_stale_hit/echocache/arc_str");
    let stale_ratio = ratio(stale_hit, lazy_hit);
    rows.push((
        "Stale hit (refresh pending) ≤ 1.5× our fresh hit".into(),
        format!("{} ({})", show_ns(stale_hit), show_x(stale_ratio)),
        stale_ratio.map(|r| r <= 1.5),
    ));
    let stale_allocs = allocs("lazy/lazy_stale_hit/echocache/arc_str");
    rows.push((
        "Stale hit: 0 allocations".into(),
        stale_allocs.map_or("—".into(), |a| format!("{a:.2} allocs/op")),
        stale_allocs.map(|a| a == 0.0),
    ));
    let miss = m("fetch_miss/echocache/arc_str");
    rows.push((
        format!("Miss (new key, store full, single-flight) ≤ the Go miss, ~{GO_MISS} ns"),
        show_ns(miss),
        miss.map(|v| v <= GO_MISS),
    ));
    let calls = f("loader_calls_per_run/single_flight/one_key_10000_callers");
    rows.push((
        "10 000 concurrent fetches of one cold key: exactly 1 loader call".into(),
        calls.map_or("—".into(), |c| format!("{c} loader calls per run")),
        calls.map(|c| c == 1.0),
    ));
    for (backend, group, raw, raw_name) in [
        ("Redis", "redis", "raw_get", "a raw fred `GET`"),
        ("NATS", "nats", "raw_kv_get", "a raw `kv.get`"),
    ] {
        for (mode, prefix) in [("sequential", "hit"), ("64 in flight", IN_FLIGHT)] {
            // The interleaved ratio (both paths measured side by side), else the ratio of
            // criterion's medians.
            let r = f(&format!("ratio/{group}/{prefix}/echocache_fetch")).or_else(|| {
                ratio(
                    m(&format!("{group}/{prefix}/echocache_fetch")),
                    m(&format!("{group}/{prefix}/{raw}")),
                )
            });
            rows.push((
                format!("{backend} hit through `EchoCache::fetch` ≤ 1.1× {raw_name} ({mode})"),
                show_x(r),
                r.map(|r| r <= 1.1),
            ));
        }
    }
    let bytes = f("bytes_per_entry/ratio_lru_store_to_bare_hashlink");
    rows.push((
        "`LruStore` bytes per entry ≤ 1.5× a bare `hashlink::LruCache`".into(),
        show_x(bytes),
        bytes.map(|r| r <= 1.5),
    ));

    let _ = writeln!(md, "\n## Targets\n");
    let _ = writeln!(
        md,
        "DESIGN.md §7's targets, judged from this run's figures: criterion's medians, and for \
         the backends the interleaved ratios (see Backends). A figure close to its bound can go \
         either way from one run to the next, the more so in quick mode or on a busy machine.\n"
    );
    let _ = writeln!(md, "| target | measured | verdict |");
    let _ = writeln!(md, "|---|---|---|");
    for (target, measured, holds) in rows {
        let _ = writeln!(md, "| {target} | {measured} | {} |", verdict(holds));
    }
}

/// Redis and NATS: the store paths beside the raw clients, and `redis-benchmark`.
fn backends(md: &mut String, est: &BTreeMap<String, Estimate>, figures: &BTreeMap<String, f64>) {
    let _ = writeln!(md, "\n## Backends\n");
    let _ = writeln!(
        md,
        "A hit through each store beside the raw client reading the same bytes of the same \
         key (a 100-byte string value in a MessagePack envelope; 100 keys cycled), against the \
         local servers `cargo xtask bench` found or started. Client, server and bench share the \
         machine's cores. The DESIGN target: a hit through the store ≤ 1.1× the raw read \
         (fred `GET`, async-nats `kv.get`).\n\n\
         - *criterion*: criterion's median and 95 % interval, each path measured on its own \
         for a few seconds, one after the other.\n\
         - *interleaved* and *vs raw*: the paths measured again side by side, in 25 short \
         rounds with every path in each round; the median time per get, and the median of the \
         per-round ratios to the raw read. A change of load on the machine between two \
         criterion benches skews the ratio of their medians; it does not skew these. The \
         targets are judged by them.\n"
    );
    let has = |group: &str| est.keys().any(|k| k.starts_with(&format!("{group}/")));
    if !has("redis") && !has("nats") {
        let _ = writeln!(
            md,
            "Not measured in this run: no Redis or NATS server could be reached (see the bench's \
             output)."
        );
        return;
    }
    let backends = [
        (
            "Redis",
            "redis",
            &[
                ("echocache_fetch", "`EchoCache::fetch` over `RedisStore`"),
                ("store_get", "`RedisStore::get`"),
                (
                    "raw_getrange",
                    "raw fred `GETRANGE key 0 max` (the store's command)",
                ),
                ("raw_get", "raw fred `GET` (the reference)"),
            ][..],
        ),
        (
            "NATS",
            "nats",
            &[
                ("echocache_fetch", "`EchoCache::fetch` over `NatsStore`"),
                ("store_get", "`NatsStore::get`"),
                ("raw_kv_get", "raw async-nats `kv.get` (the reference)"),
            ][..],
        ),
    ];
    for (mode, title) in [
        (
            "hit",
            "Sequential hits: one request after the other inside `block_on` of a current-thread \
             runtime, the latency of one hit (one round trip to the server). Allocations per \
             hit are counted over the whole process (client and runtime included).",
        ),
        (
            IN_FLIGHT,
            "64 in flight: 64 tasks on a 2-worker multi-thread runtime, each issuing its gets \
             one after the other; wall time per get, i.e. 1 / throughput.",
        ),
    ] {
        let _ = writeln!(md, "{title}\n");
        let _ = writeln!(
            md,
            "| backend | path | criterion | 95 % CI | interleaved | vs raw | {} |",
            if mode == "hit" { "allocs/op" } else { "gets/s" }
        );
        let _ = writeln!(md, "|---|---|---|---|---|---|---|");
        for (backend, group, paths) in backends {
            if !has(group) {
                let _ = writeln!(md, "| {backend} | not measured (no server) | | | | | |");
                continue;
            }
            for (path, label) in paths {
                let id = format!("{group}/{mode}/{path}");
                let e = est.get(&id);
                let interleaved = figures.get(&format!("interleaved/{id}")).copied();
                let last = if mode == "hit" {
                    figures
                        .get(&format!("allocs/{id}"))
                        .map_or("—".to_owned(), |a| format!("{a:.1}"))
                } else {
                    interleaved
                        .or(e.map(|e| e.median))
                        .map_or("—".to_owned(), |t| format!("{:.0} k", 1e6 / t))
                };
                let _ = writeln!(
                    md,
                    "| {backend} | {label} | {} | {} | {} | {} | {last} |",
                    e.map_or("—".to_owned(), |e| ns(e.median)),
                    e.map_or("—".to_owned(), |e| format!(
                        "{} – {}",
                        ns(e.low),
                        ns(e.high)
                    )),
                    interleaved.map_or("—".to_owned(), ns),
                    figures
                        .get(&format!("ratio/{id}"))
                        .map_or("—".to_owned(), |r| format!("{r:.2}×")),
                );
            }
            if group == "redis" && mode == IN_FLIGHT {
                match figures.get("redis_benchmark/get_rps") {
                    Some(rps) => {
                        let _ = writeln!(
                            md,
                            "| Redis | `redis-benchmark -q -c 50 -n 100000 -t get` (50 \
                             connections, one request in flight on each; same server, same \
                             bytes) | {} | — | — | — | {:.0} k |",
                            ns(1e9 / rps),
                            rps / 1e3,
                        );
                    }
                    None => {
                        let _ = writeln!(
                            md,
                            "| Redis | `redis-benchmark`: not run (see the bench's output) | | | | | |"
                        );
                    }
                }
            }
        }
        let _ = writeln!(md);
    }
}

/// The memory stores' bytes per entry, beside a bare `hashlink::LruCache`.
fn memory(md: &mut String, figures: &BTreeMap<String, f64>) {
    let f = |k: &str| figures.get(&format!("bytes_per_entry/{k}")).copied();
    let _ = writeln!(md, "\n## Memory per entry\n");
    let (Some(bare), Some(key_len), Some(value_len), Some(entries)) = (
        f("bare_hashlink_lru"),
        f("key_len"),
        f("value_len"),
        f("entries"),
    ) else {
        let _ = writeln!(md, "Not measured in this run.");
        return;
    };
    let _ = writeln!(
        md,
        "Heap bytes per entry after filling each store with {entries:.0} entries of `u64` values \
         under {key_len:.0}-byte keys, minus the key's own {key_len:.0} bytes: the growth of the \
         live bytes a counting allocator sees (sizes as requested: the system allocator's \
         rounding and headers come on top, for each allocation). The `u64` ({value_len:.0} bytes) \
         is held inline, so it is part of the first column; the second takes it out. The hash \
         table grows by doubling (131 072 slots for 100 000 entries), which is part of every \
         figure here.\n"
    );
    let _ = writeln!(
        md,
        "| store | bytes per entry beyond the key | beyond key and value | vs bare hashlink |"
    );
    let _ = writeln!(md, "|---|---|---|---|");
    for (name, label) in [
        ("lru_store", "`LruStore<u64>`"),
        ("expiring_lru_store", "`ExpiringLruStore<u64>`"),
        (
            "bare_hashlink_lru",
            "bare `hashlink::LruCache<Box<str>, u64>`",
        ),
    ] {
        if let Some(b) = f(name) {
            let _ = writeln!(
                md,
                "| {label} | {b:.1} | {:.1} | {:.2}× |",
                b - value_len,
                b / bare
            );
        }
    }
    if let (Some(single), Some(inline)) = (f("single_store"), f("single_store_inline")) {
        let _ = writeln!(
            md,
            "| `SingleStore<u64>` (one entry) | {single:.0} on the heap; its entry lives in the store itself ({inline:.0} bytes in all) | — | — |"
        );
    }
}

fn chart(est: &BTreeMap<String, Estimate>, path: &Path) -> Result<(), String> {
    use plotters::prelude::*;
    let libs = ["echocache", "echocache_sharded", "moka", "quick_cache"];
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
    let colors = [RED, MAGENTA, BLUE, GREEN];
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
