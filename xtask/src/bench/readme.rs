//! The README's performance table: written by `cargo xtask bench` from the same run as
//! `docs/benchmarks.md`, between two markers, so that no figure in it is copied by hand.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use super::report::{GO_HIT, GO_LAZY_HIT, GO_MISS};
use super::{Estimate, machine, median, ns};

/// The line before the table in README.md ...
const START: &str = "<!-- performance table: written by `cargo xtask bench` -->";
/// ... and the line after it.
const END: &str = "<!-- end of the performance table -->";

/// Replaces the table in `readme` (the file's path) with this run's.
pub(super) fn write(
    readme: &Path,
    est: &BTreeMap<String, Estimate>,
    figures: &BTreeMap<String, f64>,
    quick: bool,
) -> Result<(), String> {
    let text = std::fs::read_to_string(readme).map_err(|e| format!("{}: {e}", readme.display()))?;
    let new = splice(&text, &table(est, figures, quick))?;
    std::fs::write(readme, new).map_err(|e| format!("{}: {e}", readme.display()))
}

/// `readme` with what lies between [`START`] and [`END`] replaced by `table`.
fn splice(readme: &str, table: &str) -> Result<String, String> {
    let missing = || format!("README.md has no `{START}` ... `{END}` lines to write the table in");
    let start = readme.find(START).ok_or_else(missing)? + START.len();
    let end = start + readme[start..].find(END).ok_or_else(missing)?;
    Ok(format!("{}\n{table}{}", &readme[..start], &readme[end..]))
}

/// The table: echocache beside moka, quick_cache and the Go original's figures.
fn table(est: &BTreeMap<String, Estimate>, figures: &BTreeMap<String, f64>, quick: bool) -> String {
    let m = |id: &str| median(est, id);
    let t = |id: &str| m(id).map_or("not measured".to_owned(), ns);
    let allocs = |id: &str| {
        figures
            .get(&format!("allocs/{id}"))
            .map_or(String::new(), |a| format!(", {a:.2} allocs"))
    };
    let mut md = String::new();
    let _ = writeln!(
        md,
        "Measured side by side in one run of `cargo xtask bench{}` ({}); every figure, its \
         interval and allocation count in [docs/benchmarks.md](docs/benchmarks.md):\n",
        if quick { " --quick" } else { "" },
        machine()
    );
    let _ = writeln!(
        md,
        "| | echocache | moka | quick_cache | Go echocache (DESIGN.md, same machine kind) |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|");
    let hit = "fetch_hit/echocache/arc_str";
    let _ = writeln!(
        md,
        "| memory hit, `Arc<str>` | {}{} | {} | {} | — |",
        t(hit),
        allocs(hit),
        t("fetch_hit/moka/arc_str"),
        t("fetch_hit/quick_cache/arc_str")
    );
    let u64_hit = "fetch_hit/echocache/u64";
    let _ = writeln!(
        md,
        "| memory hit, `u64` | {}{} | — | — | {GO_HIT} ns |",
        t(u64_hit),
        allocs(u64_hit)
    );
    let _ = writeln!(
        md,
        "| hits from 8 tasks on 2 workers, per hit | {} (`LruStore`), {} (`ShardedLruStore`) | {} | {} | — |",
        t("fetch_concurrent/echocache/8"),
        t("fetch_concurrent/echocache_sharded/8"),
        t("fetch_concurrent/moka/8"),
        t("fetch_concurrent/quick_cache/8")
    );
    let miss = "fetch_miss/echocache/arc_str";
    let _ = writeln!(
        md,
        "| miss (new key, store full, single-flight) | {}{} | {} | {} | ≈ {GO_MISS} ns, 5 allocs |",
        t(miss),
        allocs(miss),
        t("fetch_miss/moka/arc_str"),
        t("fetch_miss/quick_cache/arc_str")
    );
    let (fresh, stale) = (
        "lazy/lazy_hit/echocache/arc_str",
        "lazy/lazy_stale_hit/echocache/arc_str",
    );
    let _ = writeln!(
        md,
        "| stale-while-revalidate fresh / stale hit | {} / {}{} | — | — | {GO_LAZY_HIT} / 265 ns, 3 allocs |",
        t(fresh),
        t(stale),
        allocs(stale)
    );
    let cold = "single_flight/one_key_10000_callers";
    let calls = figures
        .get(&format!("loader_calls_per_run/{cold}"))
        .map_or("loader calls not counted".to_owned(), |c| {
            format!("{c} loader call")
        });
    let _ = writeln!(
        md,
        "| 10 000 concurrent fetches of a cold key | {calls}, {} | — | — | — |",
        t(cold)
    );
    for (what, tiered, alone, alone_name) in [
        (
            "L1 hit through `TieredStore` vs the same `LruStore` alone",
            "tiered/l1_hit/tiered",
            "tiered/l1_hit/lru",
            "alone",
        ),
        (
            "L2 hit through `TieredStore` vs `RedisStore` alone",
            "tiered/l2_hit/tiered",
            "tiered/l2_hit/redis",
            "alone",
        ),
        (
            "hot keys from 64 tasks through `TieredStore` (L1 + Redis) vs `RedisStore` alone",
            "tiered/hot_64/tiered",
            "tiered/hot_64/redis",
            "per fetch",
        ),
    ] {
        let (short_tiered, short_alone) = (
            tiered.trim_start_matches("tiered/"),
            alone.trim_start_matches("tiered/"),
        );
        let ratio = match super::tiered::ratio(est, figures, short_tiered, short_alone) {
            Some(r) if alone_name == "per fetch" => format!(" ({:.1}× the throughput)", 1.0 / r),
            Some(r) => format!(" ({r:.2}×)"),
            None => String::new(),
        };
        let _ = writeln!(
            md,
            "| {what} | {} vs {} {alone_name}{ratio} | — | — | — |",
            t(tiered),
            t(alone)
        );
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_replaces_what_lies_between_the_markers_only() {
        let readme = format!("# A\n\n{START}\nold table\n{END}\n\nafter\n");
        let out = splice(&readme, "| new |\n").unwrap();
        assert_eq!(out, format!("# A\n\n{START}\n| new |\n{END}\n\nafter\n"));
        assert_eq!(splice(&out, "| new |\n").unwrap(), out, "idempotent");
        let err = splice("# no markers\n", "x").unwrap_err();
        assert!(err.contains("performance table"), "{err}");
    }

    #[test]
    fn every_row_is_written_and_a_missing_bench_says_so() {
        let est = BTreeMap::from([(
            "fetch_hit/echocache/u64".to_owned(),
            Estimate {
                median: 31.6,
                low: 31.0,
                high: 32.0,
            },
        )]);
        let figures = BTreeMap::from([("allocs/fetch_hit/echocache/u64".to_owned(), 0.0)]);
        let md = table(&est, &figures, false);
        assert!(
            md.contains("| memory hit, `u64` | 31.6 ns, 0.00 allocs |"),
            "{md}"
        );
        assert!(md.contains("not measured"), "{md}");
        assert_eq!(
            md.lines().filter(|l| l.starts_with("| ")).count(),
            10,
            "{md}"
        );
    }
}
