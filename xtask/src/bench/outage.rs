//! The "Outage cost" section of the report (`benches/benches/outage.rs`).

use std::collections::BTreeMap;
use std::fmt::Write as _;

pub(super) fn section(md: &mut String, figures: &BTreeMap<String, f64>) {
    let _ = writeln!(md, "\n## Outage cost\n");
    let _ = writeln!(
        md,
        "What a fetch of a new key costs (the loader returns at once) while the store is \
         healthy, stalled (`SIGSTOP`: sockets open, nothing answers) and dead (`SIGKILL`: \
         connections refused), with the circuit breaker on (the default: 2 consecutive \
         failures open it for 1 s, then one probe at a time) and off, each store call bounded \
         by the cache's store timeout (250 ms by default). Servers of the bench's own on free \
         loopback ports; stores made by `RedisStore::connect` / `NatsStore::connect`. One \
         fetch after the other; percentiles by nearest rank. With the breaker on, the first \
         fetch of a stall pays the store timeouts that open it (the max column); the rest \
         cost the loader. Without it, every fetch during a stall waits out one store timeout \
         per store call (read, lock, write).\n"
    );
    let _ = writeln!(
        md,
        "| backend | store | breaker | fetches | p50 | p99 | max |"
    );
    let _ = writeln!(md, "|---|---|---|---:|---:|---:|---:|");
    let mut any = false;
    for (name, backend) in [("Redis", "redis"), ("NATS", "nats")] {
        for state in ["healthy", "stalled", "dead"] {
            for breaker in ["on", "off"] {
                let f = |what: &str| {
                    figures
                        .get(&format!("outage/{backend}/{state}/{breaker}/{what}"))
                        .copied()
                };
                let Some(fetches) = f("fetches") else {
                    continue;
                };
                any = true;
                let ms = |v: Option<f64>| v.map_or("—".to_owned(), show_ms);
                let _ = writeln!(
                    md,
                    "| {name} | {state} | {breaker} | {fetches:.0} | {} | {} | {} |",
                    ms(f("p50_ms")),
                    ms(f("p99_ms")),
                    ms(f("max_ms"))
                );
            }
        }
    }
    if !any {
        let _ = writeln!(
            md,
            "| — | not measured in this run (no server of its own could be started) | | | | | |"
        );
    }
}

fn show_ms(v: f64) -> String {
    if v < 1.0 {
        format!("{:.1} µs", v * 1e3)
    } else {
        format!("{v:.1} ms")
    }
}
