//! The "Tiered store" section of the report (`benches/benches/tiered.rs`).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::{Estimate, median, ns};

pub(super) fn section(
    md: &mut String,
    est: &BTreeMap<String, Estimate>,
    figures: &BTreeMap<String, f64>,
) {
    let _ = writeln!(md, "\n## Tiered store\n");
    let _ = writeln!(
        md,
        "`TieredStore` with an `LruStore` L1, `RedisStore` L2 and `RedisBackplane`, against \
         the same stores alone, through `EchoCache::fetch`, in one run (100 keys, 100-byte \
         values). *L1 hit*: polled without an executor, so a read that reached Redis could \
         not complete. *L2 hit*: the tiered store's L1 holds one entry, so every read misses \
         it, reads Redis and fills L1; one fetch after the other. *64 tasks*: hot keys from \
         64 tasks on 2 workers, wall time per fetch (1 / throughput). The L1 and L2 ratios \
         are measured side by side (25 rounds, both paths in each; the median of the \
         rounds' ratios), the times are criterion's medians.\n"
    );
    let _ = writeln!(md, "| path | tiered | alone | tiered / alone | target |");
    let _ = writeln!(md, "|---|---|---|---|---|");
    let rows = [
        (
            "L1 hit (vs `LruStore` alone)",
            "l1_hit/tiered",
            "l1_hit/lru",
            Some(1.2),
        ),
        (
            "L2 hit (vs `RedisStore` alone)",
            "l2_hit/tiered",
            "l2_hit/redis",
            Some(1.1),
        ),
        (
            "hot keys, 64 tasks (vs `RedisStore` alone)",
            "hot_64/tiered",
            "hot_64/redis",
            None,
        ),
    ];
    for (name, tiered, alone, target) in rows {
        let (t, a) = (
            median(est, &format!("tiered/{tiered}")),
            median(est, &format!("tiered/{alone}")),
        );
        let show = |v: Option<f64>| v.map_or("not measured".to_owned(), ns);
        // The side-by-side ratio where the bench measured one (see `interleaved` in the
        // benches), else the ratio of criterion's medians.
        let r = ratio(est, figures, tiered, alone);
        let shown = r.map_or("—".to_owned(), |r| format!("{r:.2}×"));
        let verdict = match (r, target) {
            (Some(r), Some(limit)) if r <= limit => format!("≤ {limit}×: holds"),
            (Some(_), Some(limit)) => format!("≤ {limit}×: **does not hold**"),
            (Some(r), None) => format!("{:.1}× the throughput", 1.0 / r),
            _ => "—".to_owned(),
        };
        let ratio = shown;
        let _ = writeln!(
            md,
            "| {name} | {} | {} | {ratio} | {verdict} |",
            show(t),
            show(a)
        );
    }
    let f = |p: &str| figures.get(&format!("tiered/propagation_ms/{p}")).copied();
    match (f("p50"), f("p99"), f("max")) {
        (Some(p50), Some(p99), Some(max)) => {
            let _ = writeln!(
                md,
                "\nPropagation: from process A's `insert` returning to process B (its own \
                 clients) serving the new value instead of its L1 copy, 200 trials: p50 \
                 {p50:.3} ms, p99 {p99:.3} ms, max {max:.3} ms (target: p99 ≤ 10 ms on \
                 loopback: {}).",
                if p99 <= 10.0 {
                    "holds"
                } else {
                    "**does not hold**"
                }
            );
        }
        _ => {
            let _ = writeln!(md, "\nPropagation: not measured in this run.");
        }
    }
}

/// The tiered path `tiered` (e.g. `l1_hit/tiered`) over `alone`: the ratio measured side by
/// side in rounds (`ratio/tiered/{tiered}`) where the bench recorded one, else the ratio of
/// criterion's medians.
pub(super) fn ratio(
    est: &BTreeMap<String, Estimate>,
    figures: &BTreeMap<String, f64>,
    tiered: &str,
    alone: &str,
) -> Option<f64> {
    figures
        .get(&format!("ratio/tiered/{tiered}"))
        .copied()
        .or_else(|| {
            let (t, a) = (
                median(est, &format!("tiered/{tiered}")),
                median(est, &format!("tiered/{alone}")),
            );
            t.zip(a).map(|(t, a)| t / a)
        })
}
