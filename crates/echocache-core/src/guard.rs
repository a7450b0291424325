//! The guard the caches put around every store call: a timeout the cache owns and a
//! circuit breaker, so that a stalled or dead store costs a request almost nothing,
//! whatever the client's own settings.
//!
//! - **Timeout.** A call that has not answered within `store_timeout` is given up and
//!   fails with [`StoreError::timeout`]. The call is polled once before any timer is made:
//!   stores that answer without I/O (the memory stores) never pay for a timer.
//! - **Breaker.** After `threshold` consecutive failures (backend errors or timeouts; a
//!   decode error is an answer, not a failure) the breaker opens: every call is skipped
//!   with [`StoreError::circuit_open`] for `cool_down`. Then one call at a time is let
//!   through as a probe: its success closes the breaker (the store is used again, no user
//!   action), its failure opens it for another `cool_down`. Any call that succeeds, probe
//!   or not, closes it.

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::task::Poll;
use std::time::Duration;

use tokio::time::Instant;

use crate::StoreError;
use crate::stats::{Counters, incr};

/// The kind of a store call: the `op` label of its timing (`metrics` feature).
#[derive(Debug, Clone, Copy)]
pub(crate) enum StoreOp {
    Get,
    Set,
    Remove,
    TryLock,
    Unlock,
    ExtendLock,
    GetVersioned,
    SetIfVersion,
}

#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
impl StoreOp {
    pub(crate) const ALL: [StoreOp; 8] = [
        StoreOp::Get,
        StoreOp::Set,
        StoreOp::Remove,
        StoreOp::TryLock,
        StoreOp::Unlock,
        StoreOp::ExtendLock,
        StoreOp::GetVersioned,
        StoreOp::SetIfVersion,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            StoreOp::Get => "get",
            StoreOp::Set => "set",
            StoreOp::Remove => "remove",
            StoreOp::TryLock => "try_lock",
            StoreOp::Unlock => "unlock",
            StoreOp::ExtendLock => "extend_lock",
            StoreOp::GetVersioned => "get_versioned",
            StoreOp::SetIfVersion => "set_if_version",
        }
    }
}

/// The store timeout used when none is set: 250 ms.
pub const DEFAULT_STORE_TIMEOUT: Duration = Duration::from_millis(250);
/// How long an open circuit breaker skips the store before probing it: 1 s.
pub const DEFAULT_BREAKER_COOL_DOWN: Duration = Duration::from_secs(1);
/// How many consecutive store failures open the circuit breaker: 2.
pub const DEFAULT_BREAKER_THRESHOLD: u32 = 2;

/// The settings of the guard, as the builders collect them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct GuardSettings {
    pub(crate) timeout: Option<Duration>,
    /// `None`: no breaker.
    pub(crate) breaker: Option<(Duration, u32)>,
}

impl Default for GuardSettings {
    fn default() -> Self {
        Self {
            timeout: Some(DEFAULT_STORE_TIMEOUT),
            breaker: Some((DEFAULT_BREAKER_COOL_DOWN, DEFAULT_BREAKER_THRESHOLD)),
        }
    }
}

impl GuardSettings {
    pub(crate) fn with_timeout(self, timeout: Option<Duration>) -> Self {
        Self { timeout, ..self }
    }

    pub(crate) fn with_cool_down(self, cool_down: Duration) -> Self {
        let threshold = self.breaker.map_or(DEFAULT_BREAKER_THRESHOLD, |b| b.1);
        Self {
            breaker: Some((cool_down, threshold)),
            ..self
        }
    }

    pub(crate) fn with_threshold(self, threshold: u32) -> Self {
        let cool_down = self.breaker.map_or(DEFAULT_BREAKER_COOL_DOWN, |b| b.0);
        Self {
            breaker: Some((cool_down, threshold)),
            ..self
        }
    }

    pub(crate) fn without_breaker(self) -> Self {
        Self {
            breaker: None,
            ..self
        }
    }

    /// Checks the settings as the builders' `build` does.
    pub(crate) fn validate(&self) -> Result<(), crate::BuildError> {
        let invalid = |setting, reason| crate::BuildError::InvalidSetting { setting, reason };
        if self.timeout == Some(Duration::ZERO) {
            return Err(invalid("store_timeout", "must be greater than zero"));
        }
        if let Some((cool_down, threshold)) = self.breaker {
            if cool_down.is_zero() {
                return Err(invalid("circuit_breaker", "must be greater than zero"));
            }
            if threshold == 0 {
                return Err(invalid("circuit_breaker_threshold", "must be at least 1"));
            }
        }
        Ok(())
    }
}

pub(crate) struct StoreGuard {
    timeout: Option<Duration>,
    breaker: Option<Breaker>,
}

impl StoreGuard {
    pub(crate) fn new(settings: GuardSettings) -> Self {
        Self {
            timeout: settings.timeout,
            breaker: settings
                .breaker
                .map(|(cool_down, threshold)| Breaker::new(cool_down, threshold)),
        }
    }

    pub(crate) fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// Whether the breaker is open now (the store is being skipped).
    pub(crate) fn is_open(&self) -> bool {
        self.breaker.as_ref().is_some_and(Breaker::is_open)
    }

    /// Runs one store call through the breaker and under the timeout.
    ///
    /// Counts timeouts, skipped calls and the breaker's openings in `counters`; the
    /// caller counts the error itself where it fails open.
    pub(crate) async fn call<T>(
        &self,
        counters: &Counters,
        op: StoreOp,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let probe = match &self.breaker {
            None => None,
            Some(breaker) => match breaker.admit() {
                Admit::Closed => None,
                Admit::Probe(probe) => Some(probe),
                Admit::Skip => {
                    incr(&counters.store_calls_skipped);
                    return Err(StoreError::circuit_open());
                }
            },
        };
        let result = self.timed(counters, op, call).await;
        if let Err(e) = &result
            && e.is_timeout()
        {
            incr(&counters.store_timeouts);
        }
        if let Some(breaker) = &self.breaker {
            let failed = matches!(&result, Err(e) if e.is_outage());
            breaker.record(failed, probe.is_some(), counters);
        }
        drop(probe);
        result
    }

    /// Runs one store call under the timeout, whether the breaker is open or not: for the
    /// release of a lock this cache took, which no caller waits for, and which, skipped,
    /// would leave the lock to hold off every process's loads of the key until it expires
    /// (measured: after a Redis restart, misses then waited out the load timeout). Counts
    /// a timeout; a success closes the breaker (the store answers), a failure is not
    /// counted towards opening it.
    pub(crate) async fn call_past_breaker<T>(
        &self,
        counters: &Counters,
        op: StoreOp,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let result = self.timed(counters, op, call).await;
        match &result {
            Err(e) if e.is_timeout() => incr(&counters.store_timeouts),
            Err(_) => {}
            Ok(_) => {
                if let Some(breaker) = &self.breaker {
                    breaker.record(false, false, counters);
                }
            }
        }
        result
    }

    /// The call, bounded, and timed with the `metrics` feature when the cache is named.
    async fn timed<T>(
        &self,
        counters: &Counters,
        op: StoreOp,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        #[cfg(feature = "metrics")]
        let started = counters.timings.as_ref().map(|_| std::time::Instant::now());
        let result = self.bounded(call).await;
        #[cfg(feature = "metrics")]
        if let (Some(timings), Some(started)) = (&counters.timings, started) {
            timings.store_call(op, started);
        }
        #[cfg(not(feature = "metrics"))]
        let _ = (counters, op);
        result
    }

    /// The call, given up after the timeout. Polled once first: a store that answers
    /// without I/O makes no timer.
    async fn bounded<T>(
        &self,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let mut call = pin!(call);
        let first = std::future::poll_fn(|cx| Poll::Ready(call.as_mut().poll(cx))).await;
        if let Poll::Ready(result) = first {
            return result;
        }
        match self.timeout {
            // tokio's timer needs a runtime; without one the call runs unbounded (as the
            // load does, see `EchoCache::fetch`).
            Some(limit) if tokio::runtime::Handle::try_current().is_ok() => {
                match tokio::time::timeout(limit, call).await {
                    Ok(result) => result,
                    Err(_) => Err(StoreError::timeout(limit)),
                }
            }
            _ => call.await,
        }
    }
}

enum Admit<'a> {
    Closed,
    Probe(ProbeSlot<'a>),
    Skip,
}

/// The one probe's slot; given back when the probe ends or is dropped.
struct ProbeSlot<'a>(&'a AtomicBool);

impl Drop for ProbeSlot<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

struct Breaker {
    cool_down: Duration,
    threshold: u32,
    /// Consecutive failures while closed.
    failures: AtomicU32,
    /// 0 when closed; otherwise one more than the instant (nanoseconds after `base`) from
    /// which a probe may go through.
    open_until: AtomicU64,
    /// A probe is under way.
    probing: AtomicBool,
    base: Instant,
}

impl Breaker {
    fn new(cool_down: Duration, threshold: u32) -> Self {
        Self {
            cool_down,
            threshold,
            failures: AtomicU32::new(0),
            open_until: AtomicU64::new(0),
            probing: AtomicBool::new(false),
            base: Instant::now(),
        }
    }

    /// Nanoseconds since `base`, plus one (0 means "closed" in `open_until`).
    fn now(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_nanos())
            .unwrap_or(u64::MAX - 1)
            .saturating_add(1)
    }

    fn reopen_at(&self) -> u64 {
        let cool = u64::try_from(self.cool_down.as_nanos()).unwrap_or(u64::MAX);
        self.now().saturating_add(cool)
    }

    fn is_open(&self) -> bool {
        self.open_until.load(Ordering::Acquire) != 0
    }

    fn admit(&self) -> Admit<'_> {
        let until = self.open_until.load(Ordering::Acquire);
        if until == 0 {
            return Admit::Closed;
        }
        if self.now() < until {
            return Admit::Skip;
        }
        match self
            .probing
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => Admit::Probe(ProbeSlot(&self.probing)),
            Err(_) => Admit::Skip,
        }
    }

    fn record(&self, failed: bool, probe: bool, counters: &Counters) {
        if !failed {
            if self.failures.load(Ordering::Relaxed) != 0 {
                self.failures.store(0, Ordering::Relaxed);
            }
            // A load first: the common case (closed) makes no read-modify-write, which on
            // every hit would bounce the cache line between cores.
            if self.open_until.load(Ordering::Acquire) != 0
                && self.open_until.swap(0, Ordering::AcqRel) != 0
            {
                crate::events::circuit_closed();
            }
            return;
        }
        if probe {
            // Still down: skip it for another cool-down.
            self.open_until.store(self.reopen_at(), Ordering::Release);
            return;
        }
        let failures = self
            .failures
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        if failures >= self.threshold
            && self
                .open_until
                .compare_exchange(0, self.reopen_at(), Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            self.failures.store(0, Ordering::Relaxed);
            incr(&counters.circuit_opens);
            crate::events::circuit_opened(failures, self.cool_down);
        }
    }
}
