//! `docs/benchmarks.md`: the report `cargo xtask bench` writes from criterion's estimates
//! and the recorded figures.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::{Estimate, fleet, machine, median, ns, outage, tiered};

/// The Go original's figures on this machine kind (DESIGN.md §7), ns/op and allocs/op.
pub(super) const GO: &[(&str, &str, f64, f64)] = &[
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

pub(super) fn report(
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
pub(super) const GO_HIT: f64 = 14.6;
/// The Go original's lazy hit (ns).
pub(super) const GO_LAZY_HIT: f64 = 96.7;
/// The Go original's miss (ns; 542–553 measured).
pub(super) const GO_MISS: f64 = 550.0;
/// Requests in flight in the backend throughput benches.
const IN_FLIGHT: &str = "in_flight_64";

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
