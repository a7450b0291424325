#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]
//! The core of [echocache](https://docs.rs/echocache): the [`Store`] trait, [`Entry`],
//! errors, [`Stats`], a cancellation-safe and panic-safe single-flight, and the two caches
//! built on them:
//!
//! - [`EchoCache`]: callers wait for the value; concurrent misses of one key share one
//!   load, which runs as its own task and is stored even if every caller goes away.
//! - [`LazyEchoCache`]: stale-while-revalidate; a stale value comes back at once and is
//!   refreshed in the background (bounded queue, one refresh per key, concurrent workers,
//!   a cross-process lock through the store, graceful shutdown).
//!
//! [`TieredStore`] puts a memory store in front of a shared one, kept coherent across
//! processes by a [`Backplane`] (Redis and NATS implement it in their crates).
//!
//! Stores live in their own crates (`echocache-memory`, `echocache-redis`,
//! `echocache-nats`); most users depend on the `echocache` facade instead of this crate.
//!
//! # Cargo features
//!
//! | Feature | Default | Description |
//! |---|---|---|
//! | `codec` | no | the versioned envelope and codecs (MessagePack, JSON) remote stores share, and the Go echocache's JSON formats ([`go_format`]) |
//! | `test-util` | no | the `Store` conformance suite and test stores |
//! | `serde` | no | [`Stats`] implements `serde::Serialize` and `Deserialize` |
//! | `metrics` | no | counters, gauges and latency histograms through the `metrics` crate, for caches built with a name (`EchoCacheBuilder::metrics`) |
//! | `tracing` | no | `tracing` events for store and decode errors, loader panics and timeouts, dropped and locked-out refreshes (never on the hit path) |

mod cache;
mod clock;
#[cfg(feature = "codec")]
#[cfg_attr(docsrs, doc(cfg(feature = "codec")))]
pub mod codec;
mod core;
mod dyn_store;
mod entry;
mod error;
mod events;
mod fleet;
mod flight;
#[cfg(feature = "codec")]
#[cfg_attr(docsrs, doc(cfg(feature = "codec")))]
pub mod go_format;
mod guard;
mod lazy;
#[cfg(feature = "metrics")]
mod metrics;
#[cfg(all(test, echocache_shuttle))]
mod model_tests;
mod recursion;
mod stats;
mod store;
mod sync;
#[cfg(feature = "test-util")]
#[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
pub mod test_util;
mod tiered;

pub use cache::{DEFAULT_LOAD_TIMEOUT, EchoCache, EchoCacheBuilder};
pub use clock::{Clock, ManualClock};
pub use dyn_store::{BoxStore, DynStore, VersionedRead};
pub use entry::Entry;
pub use error::{BuildError, Error, StoreError};
pub use guard::{DEFAULT_BREAKER_COOL_DOWN, DEFAULT_BREAKER_THRESHOLD, DEFAULT_STORE_TIMEOUT};
pub use lazy::{
    CLOCK_SKEW_ALLOWANCE, DEFAULT_QUEUE_CAPACITY, DEFAULT_REFRESH_AFTER, DEFAULT_WORKERS,
    LazyEchoCache, LazyEchoCacheBuilder,
};
#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub use metrics::METRICS_INTERVAL;
pub use stats::Stats;
pub use store::{LockToken, Store, Version};
pub use tiered::{Backplane, DEFAULT_L1_TTL, L1Entry, Listener, MAX_L1_TTL, STRIPES, TieredStore};
