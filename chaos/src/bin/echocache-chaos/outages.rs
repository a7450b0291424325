//! The faults `cargo xtask chaos` injects (it tells this program about each on stdin), the
//! phase each cache's store is in, the recovery probes, and the outages as measured.

use std::io::BufRead;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::caches::{Backend, CACHES, Cache};
use crate::load::lock;

/// The recovery probe: how often, and how long one may take.
pub(crate) const PROBE_EVERY: Duration = Duration::from_millis(50);
pub(crate) const PROBE_BOUND: Duration = Duration::from_secs(1);
/// The key the probes read (never written).
const PROBE_KEY: &str = "chaos-probe";

/// What a cache's store is going through, as the load sees it: each fetch's latency is
/// counted in a phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// No fault on its server, or recovered from the last one.
    Healthy = 0,
    /// Between SIGSTOP and SIGCONT.
    Stalled = 1,
    /// Between SIGKILL and the restart.
    Down = 2,
    /// From SIGCONT or the restart until a `get` through the cache reached the store and
    /// was answered (its circuit breaker closed again).
    Recovering = 3,
}

impl Phase {
    pub(crate) const ALL: [Phase; 4] = [
        Phase::Healthy,
        Phase::Stalled,
        Phase::Down,
        Phase::Recovering,
    ];

    pub(crate) fn index(self) -> usize {
        self as usize
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Phase::Healthy => "healthy",
            Phase::Stalled => "stalled (SIGSTOP)",
            Phase::Down => "down (SIGKILL)",
            Phase::Recovering => "recovering",
        }
    }

    fn from_bits(bits: u64) -> Phase {
        Phase::ALL[(bits & 0xff) as usize % Phase::ALL.len()]
    }
}

/// A cache's phase and how many times it changed, in one atomic word (changes << 8 |
/// phase): a fetch can tell whether the phase changed while it ran.
#[derive(Debug, Default)]
pub(crate) struct PhaseCell(AtomicU64);

/// One [`PhaseCell`] per cache.
pub(crate) type Phases = [PhaseCell; CACHES];

impl PhaseCell {
    /// (changes so far, phase).
    pub(crate) fn read(&self) -> (u64, Phase) {
        let word = self.0.load(Ordering::Acquire);
        (word >> 8, Phase::from_bits(word))
    }

    fn set(&self, phase: Phase) {
        let _ = self
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                Some((((w >> 8) + 1) << 8) | phase as u64)
            });
    }

    /// Recovering → healthy (no change in any other phase).
    fn recovered(&self) {
        let _ = self
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                (Phase::from_bits(w) == Phase::Recovering)
                    .then(|| (((w >> 8) + 1) << 8) | Phase::Healthy as u64)
            });
    }
}

/// The phase a fetch is counted in: the one it started in; or, when it started healthy
/// and the phase changed while it ran, the fault it ran into.
pub(crate) fn phase_of(start: (u64, Phase), end: (u64, Phase)) -> Phase {
    match (start, end) {
        ((a, phase), (b, _)) if a == b => phase,
        ((_, Phase::Healthy), (_, Phase::Healthy)) => Phase::Recovering,
        ((_, Phase::Healthy), (_, later)) => later,
        ((_, phase), _) => phase,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FaultKind {
    /// SIGKILL, then a restart.
    Kill,
    /// SIGSTOP, then SIGCONT.
    Stall,
}

impl FaultKind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            FaultKind::Kill => "SIGKILL + restart",
            FaultKind::Stall => "SIGSTOP + SIGCONT",
        }
    }
}

/// A fault `cargo xtask chaos` reported on stdin: `down`/`up` (kill, restart) or
/// `stall`/`resume`, then `redis` or `nats`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Event {
    pub(crate) at: Instant,
    pub(crate) backend: Backend,
    pub(crate) kind: FaultKind,
    /// The fault begins (`down`, `stall`) or ends (`up`, `resume`).
    pub(crate) begins: bool,
}

fn parse_event(line: &str) -> Option<(Backend, FaultKind, bool)> {
    let mut words = line.split_whitespace();
    let (kind, begins) = match words.next()? {
        "down" => (FaultKind::Kill, true),
        "up" => (FaultKind::Kill, false),
        "stall" => (FaultKind::Stall, true),
        "resume" => (FaultKind::Stall, false),
        _ => return None,
    };
    let backend = match words.next()? {
        "redis" => Backend::Redis,
        "nats" => Backend::Nats,
        _ => return None,
    };
    Some((backend, kind, begins))
}

/// Reads fault events from stdin (a thread: stdin blocks), and moves the phases of the
/// backend's caches.
pub(crate) fn read_events(events: Arc<Mutex<Vec<Event>>>, phases: Arc<Phases>) {
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            let Some((backend, kind, begins)) = parse_event(&line) else {
                continue;
            };
            let phase = match (kind, begins) {
                (FaultKind::Kill, true) => Phase::Down,
                (FaultKind::Stall, true) => Phase::Stalled,
                (_, false) => Phase::Recovering,
            };
            for c in backend.all_caches() {
                phases[c].set(phase);
            }
            lock(&events).push(Event {
                at: Instant::now(),
                backend,
                kind,
                begins,
            });
        }
    });
}

/// One round of a cache's probe: when each of its two reads ended and whether it
/// succeeded.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Probe {
    /// A read straight from the store (the server answers the client).
    pub(crate) store: (Instant, bool),
    /// A read through the cache (its timeout and breaker let it reach the store).
    pub(crate) cache: (Instant, bool),
}

/// A cache's probe log.
pub(crate) type ProbeLog = Arc<Mutex<Vec<Probe>>>;

/// Probes cache `index` until `stop`: every [`PROBE_EVERY`], a bounded read straight from
/// its store and one through the cache, side by side. A read through the cache that
/// succeeds ends the cache's recovery.
pub(crate) async fn probe_task(
    caches: Arc<Vec<Cache>>,
    index: usize,
    stop: Arc<AtomicBool>,
    log: ProbeLog,
    phases: Arc<Phases>,
) {
    let cache = &caches[index];
    let timed = |ok: bool| (Instant::now(), ok);
    while !stop.load(Ordering::Relaxed) {
        let (store, through_cache) = tokio::join!(
            async {
                timed(matches!(
                    tokio::time::timeout(PROBE_BOUND, cache.probe(PROBE_KEY)).await,
                    Ok(Ok(()))
                ))
            },
            async {
                timed(matches!(
                    tokio::time::timeout(PROBE_BOUND, cache.get(PROBE_KEY)).await,
                    Ok(Ok(_))
                ))
            },
        );
        if through_cache.1 {
            phases[index].recovered();
        }
        lock(&log).push(Probe {
            store,
            cache: through_cache,
        });
        tokio::time::sleep(PROBE_EVERY).await;
    }
}

/// One fault (a kill and restart, or a stall and resume) of a server, as measured.
#[derive(Debug, Clone)]
pub(crate) struct Outage {
    pub(crate) backend: Backend,
    pub(crate) kind: FaultKind,
    /// SIGKILL or SIGSTOP.
    pub(crate) start: Instant,
    /// The restart or SIGCONT.
    pub(crate) end: Option<Instant>,
    /// The first read straight from the store that succeeded after `end` (the backend's
    /// EchoCache's store).
    pub(crate) server_back: Option<Instant>,
    /// For each of the backend's caches (EchoCache, LazyEchoCache): the first read through
    /// the cache that succeeded after `end` (the cache uses its store again).
    pub(crate) caches_back: [Option<Instant>; 2],
    /// For every cache on this server (by index; `None` for the others'): the first read
    /// through it that succeeded after `end`.
    pub(crate) each_back: [Option<Instant>; CACHES],
    /// Reads straight from the store that failed between the fault and `server_back`.
    pub(crate) failed_probes: usize,
}

impl Outage {
    /// When the server answered and both caches used it again, if they did.
    pub(crate) fn recovered(&self) -> Option<Instant> {
        let [a, b] = self.caches_back;
        Some(self.server_back?.max(a?).max(b?))
    }

    /// When cache `c` used its store again after this fault: for a cache on this server,
    /// its own first good read (a tiered cache's guard recovers on its own); for the
    /// others, [`recovered`](Self::recovered).
    pub(crate) fn recovered_for(&self, c: usize) -> Option<Instant> {
        if self.backend.all_caches().contains(&c) {
            Some(self.server_back?.max(self.each_back[c]?))
        } else {
            self.recovered()
        }
    }

    /// From the restart or SIGCONT to [`recovered`](Self::recovered).
    pub(crate) fn recovery(&self) -> Option<Duration> {
        Some(self.recovered()?.saturating_duration_since(self.end?))
    }

    /// Whether it recovered within `bound` of the restart or SIGCONT.
    pub(crate) fn recovered_within(&self, bound: Duration) -> bool {
        self.recovery().is_some_and(|took| took <= bound)
    }
}

/// The outages, from the events and each cache's probe log.
pub(crate) fn outages(events: &[Event], logs: &[ProbeLog]) -> Vec<Outage> {
    let mut out: Vec<Outage> = Vec::new();
    for e in events {
        if e.begins {
            out.push(Outage {
                backend: e.backend,
                kind: e.kind,
                start: e.at,
                end: None,
                server_back: None,
                caches_back: [None; 2],
                each_back: [None; CACHES],
                failed_probes: 0,
            });
        } else if let Some(o) = out
            .iter_mut()
            .rev()
            .find(|o| o.backend == e.backend && o.kind == e.kind && o.end.is_none())
        {
            o.end = Some(e.at);
        }
    }
    for o in &mut out {
        let [echo, lazy] = o.backend.caches();
        let first_ok_after = |c: usize, end: Instant, pick: fn(&Probe) -> (Instant, bool)| {
            lock(&logs[c])
                .iter()
                .map(pick)
                .find(|&(t, ok)| ok && t >= end)
                .map(|(t, _)| t)
        };
        if let Some(end) = o.end {
            o.server_back = first_ok_after(echo, end, |p| p.store);
            o.caches_back = [
                first_ok_after(echo, end, |p| p.cache),
                first_ok_after(lazy, end, |p| p.cache),
            ];
            for c in o.backend.all_caches() {
                o.each_back[c] = first_ok_after(c, end, |p| p.cache);
            }
        }
        let until = o.server_back.unwrap_or_else(Instant::now);
        o.failed_probes = lock(&logs[echo])
            .iter()
            .filter(|p| !p.store.1 && p.store.0 >= o.start && p.store.0 <= until)
            .count();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_parse() {
        assert_eq!(
            parse_event("stall nats"),
            Some((Backend::Nats, FaultKind::Stall, true))
        );
        assert_eq!(
            parse_event("up redis"),
            Some((Backend::Redis, FaultKind::Kill, false))
        );
        assert_eq!(parse_event("resume"), None);
        assert_eq!(parse_event("pause redis"), None);
    }

    #[test]
    fn a_fetch_counts_in_the_fault_it_ran_into() {
        let cell = PhaseCell::default();
        let healthy = cell.read();
        assert_eq!(phase_of(healthy, cell.read()), Phase::Healthy);
        cell.set(Phase::Stalled);
        let stalled = cell.read();
        assert_eq!(phase_of(healthy, stalled), Phase::Stalled);
        cell.recovered();
        assert_eq!(cell.read(), stalled, "only a recovering cache recovers");
        cell.set(Phase::Recovering);
        assert_eq!(phase_of(stalled, cell.read()), Phase::Stalled);
        cell.recovered();
        assert_eq!(cell.read().1, Phase::Healthy);
        assert_eq!(phase_of(healthy, cell.read()), Phase::Recovering);
    }
}
