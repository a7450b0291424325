//! The report of a run: a Markdown text (printed, and written with `--report`), the
//! verdict, and one machine-readable summary line.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use echocache_chaos::{Latencies, latency, ms};
use echocache_core::Stats;
use echocache_core::{DEFAULT_BREAKER_COOL_DOWN, DEFAULT_BREAKER_THRESHOLD, DEFAULT_STORE_TIMEOUT};

use crate::caches::{Backend, NAMES, NATS_REQUEST_TIMEOUT, REDIS_COMMAND_TIMEOUT};
use crate::load::{FleetCheck, OP_BOUND, Tally};
use crate::outages::{FaultKind, Outage, Phase};
use crate::{ENTRY_TTL, EXPIRE_AFTER, LOAD_TIMEOUT, REFRESH_AFTER, Settings};

/// A fetch slower than this is counted apart in the latency tables.
const SLOW: Duration = Duration::from_millis(100);

/// Everything the report shows.
pub(crate) struct Report<'a> {
    pub(crate) settings: &'a Settings,
    pub(crate) start: Instant,
    pub(crate) elapsed: Duration,
    pub(crate) totals: Vec<Tally>,
    pub(crate) stats: Vec<Stats>,
    pub(crate) task_panics: u64,
    pub(crate) hook_panics: u64,
    pub(crate) stuck_tasks: u64,
    pub(crate) outages: Vec<Outage>,
    pub(crate) calls: HashMap<(usize, u32, u32), u32>,
    pub(crate) bumps: HashMap<(u32, u32), u32>,
    pub(crate) left: Vec<(usize, usize)>,
    pub(crate) shutdown_hung: Vec<&'static str>,
    pub(crate) fleet: FleetCheck,
}

/// Loader calls per key per refresh window, for one cache.
#[derive(Debug, Default)]
struct LoaderFigures {
    total: u64,
    /// (key, window) pairs with at least one call.
    key_windows: usize,
    max: u32,
    mean: f64,
    /// The max over windows that overlap no outage (fault to recovery).
    healthy_max: u32,
    /// Outside outages: the most calls beyond what the key's invalidations explain (one,
    /// plus two per invalidation in the window: the load it superseded may be redone, plus
    /// one per invalidation late in the previous window), and how many key-windows had
    /// any.
    healthy_max_excess: u32,
    healthy_excess_windows: usize,
    /// The first few of them: (window, key, calls, allowed).
    excess_examples: Vec<(u32, u32, u32, u32)>,
}

impl Report<'_> {
    /// Faults not recovered (server answering, both caches using it again) within the
    /// recovery bound of their restart or SIGCONT.
    fn unrecovered(&self) -> usize {
        let bound = self.settings.recovery;
        self.outages
            .iter()
            .filter(|o| !o.recovered_within(bound))
            .count()
    }

    /// The fetch latencies of `backend`'s caches in `phase`.
    fn backend_latency(&self, backend: Backend, phase: Phase) -> Latencies {
        let mut all = Latencies::new();
        for c in backend.all_caches() {
            all.merge(self.totals[c].fetch_latency[phase.index()].clone());
        }
        all
    }

    /// One machine-readable line with the headline figures (read by the smoke test).
    pub(crate) fn summary(&self) -> String {
        let sum = |f: fn(&Tally) -> u64| self.totals.iter().map(f).sum::<u64>();
        let stalls = self
            .outages
            .iter()
            .filter(|o| o.kind == FaultKind::Stall)
            .count();
        format!(
            "chaos: summary ops={} errors={} panics={} wrong_key={} older_than_invalidated={} \
             faults={} stalls={} unrecovered={} stuck_tasks={} left_after_shutdown={}",
            sum(Tally::ops),
            sum(Tally::errors),
            self.task_panics + self.hook_panics,
            sum(|t| t.wrong_key),
            sum(|t| t.below_floor),
            self.outages.len(),
            stalls,
            self.unrecovered(),
            self.stuck_tasks,
            self.left.iter().map(|(a, b)| a + b).sum::<usize>(),
        )
    }

    /// The report's text and the verdict (`true`: passed).
    pub(crate) fn render(&self) -> (String, bool) {
        let mut out = String::new();
        let passed = self.head(&mut out);
        self.operations(&mut out);
        self.errors(&mut out);
        self.wrong_values(&mut out);
        self.recoveries(&mut out);
        self.latencies(&mut out);
        self.loader_calls(&mut out);
        self.fleet(&mut out);
        self.counters(&mut out);
        self.after_shutdown(&mut out);
        (out, passed)
    }

    fn head(&self, out: &mut String) -> bool {
        let s = self.settings;
        let total_ops: u64 = self.totals.iter().map(Tally::ops).sum();
        let total_errors: u64 = self.totals.iter().map(Tally::errors).sum();
        let wrong: u64 = self
            .totals
            .iter()
            .map(|t| t.wrong_key + t.below_floor)
            .sum();
        let panics = self.task_panics + self.hook_panics;
        let unrecovered = self.unrecovered();
        let count = |b: Backend, k: FaultKind| {
            self.outages
                .iter()
                .filter(|o| o.backend == b && o.kind == k)
                .count()
        };
        let stuck = self.stuck_tasks;
        let left: usize = self.left.iter().map(|(a, b)| a + b).sum();
        let hung = self.shutdown_hung.len();
        let duplicates = self.fleet.duplicates;
        let excess: usize = (0..NAMES.len())
            .map(|c| self.loader_figures(c).healthy_excess_windows)
            .sum();
        let passed = panics == 0
            && wrong == 0
            && unrecovered == 0
            && stuck == 0
            && left == 0
            && hung == 0
            && duplicates == 0
            && excess == 0;

        out.push_str("# echocache chaos run\n\n");
        let _ = write!(
            out,
            "{} s of load ({:.1} s measured), {} tasks over {} keys, 10 caches \
             (EchoCache and LazyEchoCache on Redis and on NATS; on each server a second \
             EchoCache on a client of its own sharing the first one's prefix: two processes \
             of one fleet; and on each server two EchoCaches over tiered stores, L1 TTL {} s, \
             whose second is never invalidated directly but hears of the first's \
             invalidations through the backplane, checked against them {} ms after they \
             returned, or after the L1 TTL while its server is not healthy); faults: ",
            s.seconds,
            self.elapsed.as_secs_f64(),
            s.tasks,
            s.keys,
            crate::caches::L1_TTL.as_secs(),
            crate::caches::PROPAGATION_BOUND.as_millis(),
        );
        for kind in [FaultKind::Kill, FaultKind::Stall] {
            let _ = write!(
                out,
                "{} {} ({} Redis, {} NATS){}",
                count(Backend::Redis, kind) + count(Backend::Nats, kind),
                kind.name(),
                count(Backend::Redis, kind),
                count(Backend::Nats, kind),
                if kind == FaultKind::Kill {
                    ", "
                } else {
                    ".\n\n"
                },
            );
        }
        let _ = write!(
            out,
            "Settings: lazy refresh_after {} s, expire_after {} s; load_timeout {} s; entry TTL \
             {} s; the caches' store guard at its defaults: store_timeout {} ms, circuit \
             breaker opening after {} consecutive failures for a cool-down of {} ms; fred: \
             command timeout {} ms, reconnect exponential 100 ms..5 s, fail_fast false, 2 \
             attempts; async-nats: request timeout {} ms, default reconnect; each operation \
             bounded by the harness at {} s.\n\n",
            REFRESH_AFTER.as_secs(),
            EXPIRE_AFTER.as_secs(),
            LOAD_TIMEOUT.as_secs(),
            ENTRY_TTL.as_secs(),
            DEFAULT_STORE_TIMEOUT.as_millis(),
            DEFAULT_BREAKER_THRESHOLD,
            DEFAULT_BREAKER_COOL_DOWN.as_millis(),
            REDIS_COMMAND_TIMEOUT.as_millis(),
            NATS_REQUEST_TIMEOUT.as_millis(),
            OP_BOUND.as_secs(),
        );
        let _ = write!(
            out,
            "**Verdict: {}** — operations {total_ops}, errors returned {total_errors}, \
             panics {panics}, wrong values {wrong}, faults not recovered within {} s \
             {unrecovered}, tasks that did not end {stuck}, shutdowns that did not return \
             {hung}, loads or refreshes left after shutdown {left}, fleet duplicate loads \
             {duplicates}, key-windows with loader calls beyond what invalidations explain \
             (outside outages) {excess}.\n\n",
            if passed { "PASS" } else { "FAIL" },
            s.recovery.as_secs(),
        );
        let stalled: Vec<String> = Backend::ALL
            .iter()
            .filter_map(|&b| {
                let f = self.backend_latency(b, Phase::Stalled).summary()?;
                let h = self.backend_latency(b, Phase::Healthy).summary();
                Some(format!(
                    "{} p50 {}, p99 {}, max {} (healthy: p50 {}, p99 {})",
                    b.name(),
                    latency(f.p50),
                    latency(f.p99),
                    latency(f.max),
                    h.map_or("—".into(), |h| latency(h.p50)),
                    h.map_or("—".into(), |h| latency(h.p99)),
                ))
            })
            .collect();
        if !stalled.is_empty() {
            let _ = write!(
                out,
                "Fetch latency while stalled: {}.\n\n",
                stalled.join("; ")
            );
        }
        passed
    }

    fn operations(&self, out: &mut String) {
        out.push_str("## Operations\n\n");
        out.push_str(
            "| cache | ops | fetch | get | invalidate | errors | wrong key | older than an \
             invalidated version | task saw a version go back | slowest op |\n\
             |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        for (c, t) in self.totals.iter().enumerate() {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                NAMES[c],
                t.ops(),
                t.fetches,
                t.gets,
                t.invalidates,
                t.errors(),
                t.wrong_key,
                t.below_floor,
                t.regressions,
                ms(t.slowest),
            );
        }
        out.push_str(
            "\n\"Task saw a version go back\" is informational: after an invalidation that \
             failed (server down), an older entry may legitimately be read again.\n\n",
        );
    }

    fn errors(&self, out: &mut String) {
        out.push_str("## Errors returned, by kind\n\n");
        let mut kinds: BTreeMap<(&str, &str), u64> = BTreeMap::new();
        for (c, t) in self.totals.iter().enumerate() {
            for (kind, n) in &t.errors {
                *kinds.entry((NAMES[c], kind)).or_default() += n;
            }
        }
        if kinds.is_empty() {
            out.push_str("none\n\n");
        } else {
            out.push_str("| cache | kind | count |\n|---|---|---:|\n");
            for ((cache, kind), n) in &kinds {
                let _ = writeln!(out, "| {cache} | {kind} | {n} |");
            }
            out.push('\n');
        }

        out.push_str("## Panics\n\n");
        let _ = write!(
            out,
            "Load tasks that panicked (JoinError::is_panic): {}. Panics anywhere in the \
             process (panic hook, including caught ones): {}. Tasks stopped by the harness \
             (did not end in time): {}.\n\n",
            self.task_panics, self.hook_panics, self.stuck_tasks
        );
    }

    fn wrong_values(&self, out: &mut String) {
        if self.totals.iter().all(|t| t.wrong.is_empty()) {
            return;
        }
        out.push_str("## Wrong values (first few per task and cache)\n\n");
        out.push_str(
            "Times in ms since the start: when the loader read the version it returned, \
             when the invalidation of the newer version completed, when the operation \
             started, and how long it took.\n\n\
             | cache | op | key | got | loaded at | invalidated up to | invalidated at | op started | op took |\n\
             |---|---|---|---|---:|---:|---:|---:|---:|\n",
        );
        for t in &self.totals {
            for w in t.wrong.iter().take(20) {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} v{} | {} | v{} | {} | {} | {} |",
                    NAMES[w.cache],
                    w.op,
                    w.key,
                    w.got.key,
                    w.got.version,
                    w.got.loaded_at_ms,
                    w.floor,
                    w.floor_at_ms,
                    w.at.as_millis(),
                    ms(w.took),
                );
            }
        }
        out.push('\n');
    }

    fn recoveries(&self, out: &mut String) {
        let s = self.settings;
        out.push_str("## Recovery after each fault\n\n");
        if self.outages.is_empty() {
            out.push_str("No faults were injected (no `--events-stdin` events).\n\n");
            return;
        }
        out.push_str(
            "Times from the restart or SIGCONT: to the first read straight from the store \
             that succeeded (the client answers again), and, for each cache, to the first \
             `get` through the cache that reached the store and succeeded (its circuit \
             breaker let calls through again: the store is used again, with no user action). \
             A fault counts as recovered when all three happened within the recovery \
             bound.\n\n\
             | # | server | fault | lasted | client answers | EchoCache uses the store | \
             LazyEchoCache uses the store | failed store probes |\n\
             |---:|---|---|---:|---:|---:|---:|---:|\n",
        );
        let after = |end: Option<Instant>, t: Option<Instant>| match (end, t) {
            (Some(end), Some(t)) => ms(t.saturating_duration_since(end)),
            (None, _) => "never ended".to_owned(),
            _ => "never".to_owned(),
        };
        let mut recoveries: BTreeMap<(&str, &str), Vec<Duration>> = BTreeMap::new();
        for (i, o) in self.outages.iter().enumerate() {
            let lasted = o.end.map_or(
                "not ended".to_owned(),
                |end| ms(end.duration_since(o.start)),
            );
            let recovered = if o.recovered_within(s.recovery) {
                ""
            } else {
                " **not recovered in time**"
            };
            let _ = writeln!(
                out,
                "| {} | {} | {}{recovered} | {} | {} | {} | {} | {} |",
                i + 1,
                o.backend.name(),
                o.kind.name(),
                lasted,
                after(o.end, o.server_back),
                after(o.end, o.caches_back[0]),
                after(o.end, o.caches_back[1]),
                o.failed_probes
            );
            if let Some(took) = o.recovery() {
                recoveries
                    .entry((o.backend.name(), o.kind.name()))
                    .or_default()
                    .push(took);
            }
        }
        out.push_str(
            "\nThe other caches of each server, from the restart or SIGCONT to their first \
             `get` that reached the store (each has its own circuit breaker):\n\n",
        );
        for (i, o) in self.outages.iter().enumerate() {
            let others: Vec<String> = o
                .backend
                .all_caches()
                .into_iter()
                .filter(|c| !o.backend.caches().contains(c))
                .map(|c| format!("{} {}", NAMES[c], after(o.end, o.each_back[c])))
                .collect();
            let _ = writeln!(out, "- #{}: {}", i + 1, others.join(", "));
        }
        out.push('\n');
        for ((backend, kind), took) in &recoveries {
            let max = took.iter().max().copied().unwrap_or_default();
            let mean = took.iter().sum::<Duration>() / took.len() as u32;
            let _ = writeln!(
                out,
                "- {backend}, {kind}: recovered (client and both caches) after max {}, mean {}.",
                ms(max),
                ms(mean)
            );
        }
        out.push('\n');
    }

    fn latencies(&self, out: &mut String) {
        out.push_str("## Fetch latency by phase\n\n");
        let _ = write!(
            out,
            "Every fetch is timed (loaders take 0.5–3.5 ms) and counted in the phase its cache's \
             store was in when it started; a fetch that started healthy and ran into a fault \
             counts in that fault. Healthy: no fault on that server (or recovered from the \
             last); stalled: SIGSTOP to SIGCONT; down: SIGKILL to restart; recovering: from \
             the restart or SIGCONT until a `get` through that cache reached the store again. \
             Percentiles by nearest rank; \"> {}\" counts the slow fetches.\n\n",
            ms(SLOW)
        );
        out.push_str(
            "| server | cache | phase | fetches | p50 | p99 | max | mean | > 100 ms |\n\
             |---|---|---|---:|---:|---:|---:|---:|---:|\n",
        );
        for backend in Backend::ALL {
            let rows = std::iter::once(("all caches", None))
                .chain(backend.all_caches().map(|c| (NAMES[c], Some(c))));
            for (name, c) in rows {
                for phase in Phase::ALL {
                    let samples = match c {
                        None => self.backend_latency(backend, phase),
                        Some(c) => self.totals[c].fetch_latency[phase.index()].clone(),
                    };
                    let Some(f) = samples.summary() else {
                        continue;
                    };
                    let _ = writeln!(
                        out,
                        "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                        backend.name(),
                        name.split('/').next_back().unwrap_or(name),
                        phase.name(),
                        f.n,
                        latency(f.p50),
                        latency(f.p99),
                        latency(f.max),
                        latency(f.mean),
                        samples.above(SLOW),
                    );
                }
            }
        }
        out.push('\n');
    }

    /// Loader calls per key per refresh window for cache `c`.
    fn loader_figures(&self, c: usize) -> LoaderFigures {
        let start = self.start;
        let window = |t: Instant| {
            (t.saturating_duration_since(start).as_millis() / REFRESH_AFTER.as_millis()) as u32
        };
        let outage_windows: Vec<(u32, u32)> = self
            .outages
            .iter()
            .map(|o| {
                (
                    window(o.start),
                    window(o.recovered_for(c).unwrap_or_else(Instant::now)),
                )
            })
            .collect();
        let mut f = LoaderFigures::default();
        let mut sum = 0u64;
        for (&(cache, window, key), &calls) in &self.calls {
            if cache != c {
                continue;
            }
            f.max = f.max.max(calls);
            sum += u64::from(calls);
            f.total += u64::from(calls);
            f.key_windows += 1;
            let in_outage = outage_windows
                .iter()
                .any(|&(from, to)| window >= from && window <= to);
            if !in_outage {
                f.healthy_max = f.healthy_max.max(calls);
                let bumps = |w: u32| self.bumps.get(&(w, key)).copied().unwrap_or(0);
                let allowed = 1 + 2 * bumps(window) + window.checked_sub(1).map_or(0, bumps);
                let excess = calls.saturating_sub(allowed);
                f.healthy_max_excess = f.healthy_max_excess.max(excess);
                if excess > 0 {
                    f.healthy_excess_windows += 1;
                    if f.excess_examples.len() < 5 {
                        f.excess_examples.push((window, key, calls, allowed));
                    }
                }
            }
        }
        if f.key_windows > 0 {
            f.mean = sum as f64 / f.key_windows as f64;
        }
        f
    }

    fn loader_calls(&self, out: &mut String) {
        out.push_str("## Loader calls per key per refresh window (1 s)\n\n");
        out.push_str(
            "Counted per cache, key and 1 s window (the lazy caches' refresh_after), over the \
             key-windows with at least one call. \"Beyond what invalidations explain\": calls in a \
             window outside outages (fault to that cache's recovery) beyond one load, plus two per \
             invalidation of that key in that window (the load it superseded may be redone), \
             plus one per invalidation in the previous window; any fails the run.\n\n\
             | cache | loader calls | key-windows | max | mean | max outside outages | \
             max beyond what invalidations explain (outside outages) | key-windows with any |\n\
             |---|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        for (c, name) in NAMES.iter().enumerate() {
            let f = self.loader_figures(c);
            let _ = writeln!(
                out,
                "| {name} | {} | {} | {} | {:.2} | {} | {} | {} |",
                f.total,
                f.key_windows,
                f.max,
                f.mean,
                f.healthy_max,
                f.healthy_max_excess,
                f.healthy_excess_windows
            );
        }
        for (c, name) in NAMES.iter().enumerate() {
            for (window, key, calls, allowed) in self.loader_figures(c).excess_examples {
                let _ = writeln!(
                    out,
                    "\n- {name}: key {key}, window {window} (from {} s): {calls} calls, {allowed} \
                     explained",
                    u64::from(window) * REFRESH_AFTER.as_secs()
                );
            }
        }
        out.push_str(
            "\nWhile a store is down or stalled every fetch fails open to the loader \
             (concurrent fetches of a key still share one load), so outage windows see more \
             calls.\n\n",
        );
    }

    fn counters(&self, out: &mut String) {
        out.push_str("## Cache counters (`stats()`)\n\n");
        out.push_str(
            "| cache | hits | stale hits | misses | loads | coalesced | refreshes | refresh errors | dropped | locked out | load timeouts |\n\
             |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        for (c, st) in self.stats.iter().enumerate() {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                NAMES[c],
                st.hits,
                st.stale_hits,
                st.misses,
                st.loads,
                st.coalesced,
                st.refreshes,
                st.refresh_errors,
                st.refreshes_dropped,
                st.refreshes_locked_out,
                st.load_timeouts,
            );
        }
        out.push_str(
            "\nThe store guard and the rest (the recovery probes' `get`s through the caches \
             count here too):\n\n\
             | cache | store errors | decode errors | store timeouts | circuit opens | store calls skipped | future-dated entries | refresh locks lost | dispatcher restarts |\n\
             |---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        for (c, st) in self.stats.iter().enumerate() {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                NAMES[c],
                st.store_errors,
                st.decode_errors,
                st.store_timeouts,
                st.circuit_opens,
                st.store_calls_skipped,
                st.future_dated_entries,
                st.refresh_locks_lost,
                st.refresh_dispatcher_restarts,
            );
        }
        out.push_str(
            "\nThe fleet: waits for another process's load, waits that reached the load \
             timeout (then loaded), loaded values whose conditional write the store refused \
             (another process wrote or invalidated the key meanwhile):\n\n\
             | cache | fleet waits | fleet wait timeouts | stale writes refused |\n\
             |---|---:|---:|---:|\n",
        );
        for (c, st) in self.stats.iter().enumerate() {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} |",
                NAMES[c], st.fleet_waits, st.fleet_wait_timeouts, st.stale_writes_refused,
            );
        }
    }

    fn fleet(&self, out: &mut String) {
        let f = &self.fleet;
        out.push_str(
            "## Fleet: one load of a key version across processes

",
        );
        let _ = writeln!(
            out,
            "The two EchoCaches of each server share a prefix from clients of their own. \
             Their loads: {}. Pairs of loads of the same key version by both, running at \
             once: {}. Excused: a store outage in either cache during the fetch (every fetch \
             then fails open to its loader) {}; else store trouble in either cache meanwhile \
             (a store call failed or timed out: a fetch may have failed open, without the \
             lock) {}; else an invalidation of the key from 50 ms before to the end {}. \
             **Duplicates** (the fleet single-flight let both load): {}.",
            f.loads, f.overlapping, f.in_outage, f.in_trouble, f.bumped, f.duplicates
        );
        for (a, b) in &f.examples {
            let _ = writeln!(
                out,
                "- key-{} v{}: {} loaded {:.1}–{:.1} ms, {} loaded {:.1}–{:.1} ms",
                a.key,
                a.version,
                NAMES[a.cache],
                a.start as f64 / 1e3,
                a.end as f64 / 1e3,
                NAMES[b.cache],
                b.start as f64 / 1e3,
                b.end as f64 / 1e3,
            );
        }
        out.push('\n');
    }

    fn after_shutdown(&self, out: &mut String) {
        out.push_str("\n## After shutdown\n\n");
        for (c, (inflight, pending)) in self.left.iter().enumerate() {
            let _ = writeln!(
                out,
                "- {}: loads in flight {inflight}, refreshes pending {pending}",
                NAMES[c]
            );
        }
        if !self.shutdown_hung.is_empty() {
            let _ = writeln!(
                out,
                "- shutdown() did not return within 10 s: {}",
                self.shutdown_hung.join(", ")
            );
        }
    }
}
