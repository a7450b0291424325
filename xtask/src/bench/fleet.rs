//! The "Fleet" section of the report: what ordered writes, the fleet lock on a miss and
//! waiting for another process's load cost (`benches/benches/fleet.rs`).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::{Estimate, median, ns};

pub(super) fn section(
    md: &mut String,
    est: &BTreeMap<String, Estimate>,
    figures: &BTreeMap<String, f64>,
) {
    let _ = writeln!(md, "\n## Fleet: ordered writes, the fleet lock, waiting\n");
    let _ = writeln!(
        md,
        "One request after the other on a current-thread runtime, against the same local \
         servers. *write*: the write path of a load, `get` + `set` (plain) against \
         `get_versioned` + `set_if_version` (ordered: a Lua compare-and-set on Redis, a \
         revision-checked update on NATS); every ordered write is checked to succeed. *miss*: \
         `EchoCache::fetch` of a missing key with an instant loader, the fleet lock off and on \
         (`fleet_single_flight`); each key is invalidated again outside the timing.\n"
    );
    let _ = writeln!(
        md,
        "| backend | plain write | ordered write | ordered / plain | miss, lock off | miss, lock on | on / off |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|");
    let mut any = false;
    for (name, group) in [("Redis", "fleet_redis"), ("NATS", "fleet_nats")] {
        let m = |bench: &str| median(est, &format!("{group}/{bench}"));
        let (plain, ordered, off, on) = (
            m("write/plain"),
            m("write/ordered"),
            m("miss/lock_off"),
            m("miss/lock_on"),
        );
        let show = |v: Option<f64>| v.map_or("not measured".to_owned(), ns);
        let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) => format!("{:.2}×", a / b),
            _ => "—".to_owned(),
        };
        any |= plain.is_some() || off.is_some();
        let _ = writeln!(
            md,
            "| {name} | {} | {} | {} | {} | {} | {} |",
            show(plain),
            show(ordered),
            ratio(ordered, plain),
            show(off),
            show(on),
            ratio(on, off)
        );
    }
    if !any {
        let _ = writeln!(
            md,
            "\nNot measured in this run (no server could be reached)."
        );
    }
    let _ = writeln!(
        md,
        "\nWaiting for another process: process A loads a key for 20 ms while process B, on \
         its own client, waits for A's value (B polls the store, pausing a quarter of the \
         time waited so far, 2 ms to 50 ms, or until its store hears of a change: a tiered \
         store's backplane). The time from A's `fetch` returning (its \
         value written) to B's:\n"
    );
    let _ = writeln!(md, "| backend | trials | p50 | p99 | max |");
    let _ = writeln!(md, "|---|---|---|---|---|");
    for (name, key) in [
        ("Redis", "redis"),
        ("NATS", "nats"),
        (
            "Redis through `TieredStore` (the backplane notifies B)",
            "redis_tiered",
        ),
    ] {
        let f = |what: &str| figures.get(&format!("fleet/{key}/{what}")).copied();
        let ms = |v: Option<f64>| v.map_or("not measured".to_owned(), |v| format!("{v:.2} ms"));
        let trials = f("wait_after_value/trials").map_or("—".to_owned(), |t| format!("{t:.0}"));
        let _ = writeln!(
            md,
            "| {name} | {trials} | {} | {} | {} |",
            ms(f("wait_after_value_ms/p50")),
            ms(f("wait_after_value_ms/p99")),
            ms(f("wait_after_value_ms/max"))
        );
    }
}
