//! With the `tracing` feature, failures, drops and lock contention are reported as events
//! with target `echocache`, and hits report nothing.
#![cfg(feature = "tracing")]

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use common::{Upstream, until};
use echocache_core::test_util::TestStore;
use echocache_core::{EchoCache, Entry, LazyEchoCache, ManualClock};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

/// Records `level message` of every `echocache` event.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<String>>>);

struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

impl Subscriber for Recorder {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.target() == "echocache"
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut message = Message(String::new());
        event.record(&mut message);
        self.0
            .lock()
            .unwrap()
            .push(format!("{} {}", event.metadata().level(), message.0));
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

impl Recorder {
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut self.0.lock().unwrap())
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn hits_are_silent_and_failures_are_reported() {
    let recorder = Recorder::default();
    let _guard = tracing::subscriber::set_default(recorder.clone());
    runtime().block_on(async {
        let store = TestStore::<String>::new();
        let cache = EchoCache::builder(store.clone())
            .no_circuit_breaker()
            .build()
            .unwrap();
        cache.insert("k", "v".into()).await.unwrap();
        for _ in 0..10 {
            cache
                .fetch("k", || async { Ok::<_, Upstream>("x".to_string()) })
                .await
                .unwrap();
        }
        assert!(recorder.take().is_empty(), "hits emit nothing");

        store.set_failing(true);
        cache
            .fetch("down", || async { Ok::<_, Upstream>("x".to_string()) })
            .await
            .unwrap();
        let events = recorder.take();
        assert_eq!(
            events.len(),
            2,
            "get and lock (no write without a version): {events:?}"
        );
        assert!(
            events
                .iter()
                .all(|e| e.starts_with("WARN store operation failed")),
            "{events:?}"
        );

        store.set_failing(false);
        store.set_corrupt(true);
        cache
            .fetch("k", || async { Ok::<_, Upstream>("x".to_string()) })
            .await
            .unwrap();
        let events = recorder.take();
        assert!(
            events[0].starts_with("WARN stored entry could not be decoded"),
            "{events:?}"
        );
        store.set_corrupt(false);

        let panicked = cache
            .fetch("p", || async {
                if true {
                    panic!("kaboom");
                }
                Ok::<String, Upstream>(String::new())
            })
            .await;
        assert!(panicked.is_err());
        assert_eq!(recorder.take(), vec!["ERROR loader panicked".to_string()]);
    });
}

#[test]
fn the_circuit_breaker_reports_opening_and_closing() {
    let recorder = Recorder::default();
    let _guard = tracing::subscriber::set_default(recorder.clone());
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap()
        .block_on(async {
            let store = TestStore::<String>::new();
            let cache = EchoCache::new(store.clone());
            store.set_failing(true);
            cache
                .fetch("down", || async { Ok::<_, Upstream>("x".to_string()) })
                .await
                .unwrap();
            assert_eq!(
                recorder.take(),
                vec![
                    "WARN store operation failed; the cache fails open".to_string(),
                    "WARN circuit breaker opened: the store is skipped until a probe finds it answering".to_string(),
                    "WARN store operation failed; the cache fails open".to_string(),
                ]
            );
            // Skipped calls are counted, not reported one by one.
            cache
                .fetch("skipped", || async { Ok::<_, Upstream>("x".to_string()) })
                .await
                .unwrap();
            assert!(recorder.take().is_empty());
            store.set_failing(false);
            tokio::time::advance(echocache_core::DEFAULT_BREAKER_COOL_DOWN).await;
            cache
                .fetch("up", || async { Ok::<_, Upstream>("x".to_string()) })
                .await
                .unwrap();
            assert_eq!(
                recorder.take(),
                vec!["INFO circuit breaker closed: the store answers again".to_string()]
            );
        });
}

#[test]
fn dropped_and_locked_out_refreshes_are_reported() {
    let recorder = Recorder::default();
    let _guard = tracing::subscriber::set_default(recorder.clone());
    runtime().block_on(async {
        let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000));
        let store = TestStore::<String>::new();
        for key in ["a", "b"] {
            store.put(
                key,
                Entry::new("old".into(), clock.now() - Duration::from_secs(120)),
            );
        }
        let _held = store.hold_lock("a");
        let cache = LazyEchoCache::builder(store.clone())
            .refresh_after(Duration::from_secs(60))
            .queue_capacity(1)
            .clock(clock.clone())
            .build()
            .unwrap();
        // "a" is queued (the dispatcher has not run yet), "b" finds the queue full.
        cache
            .fetch("a", || async { Ok::<_, Upstream>("new".to_string()) })
            .await
            .unwrap();
        cache
            .fetch("b", || async { Ok::<_, Upstream>("new".to_string()) })
            .await
            .unwrap();
        until("a's refresh gave up", || cache.refreshes_pending() == 0).await;
        let events = recorder.take();
        assert!(
            events.contains(&"WARN refresh queue full; refresh dropped".to_string()),
            "{events:?}"
        );
        assert!(
            events.contains(
                &"DEBUG refresh skipped: another process holds the key's lock".to_string()
            ),
            "{events:?}"
        );
        cache.shutdown().await;
    });
}
