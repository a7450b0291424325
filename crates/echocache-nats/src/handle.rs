//! [`BucketHandle`]: the bucket a store works on. A store made by
//! [`NatsStore::connect`](crate::NatsStore::connect) opens it lazily (the server may be
//! down when the store is made), checks it again after the client reconnects, and
//! re-creates it when the server has lost it (a bucket with memory storage after a server
//! restart).
//!
//! Every operation goes through [`BucketHandle::run`]:
//!
//! 1. A store that owns its client fails at once while the client is not connected,
//!    instead of queueing a request that waits for the request timeout (and a write that
//!    might land after the reconnect, over a newer value).
//! 2. With no bucket yet, or when the client has (re)connected since the bucket was last
//!    checked, the bucket is opened or checked first, creating it when it is missing.
//! 3. The operation runs; when it fails because the bucket's stream does not exist, the
//!    bucket is re-created and the operation runs once more.
//!
//! Opening, checking and re-creating happen under one lock, one at a time; an operation
//! that waited for another's re-creation does not re-create again. Nothing loops: an
//! operation makes at most one open or check and at most one re-creation, each bounded by
//! the JetStream request timeout. Nothing is counted here: the caches count the store
//! errors an operation returns.

use std::error::Error as StdError;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use async_nats::connection::State;
use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use async_nats::jetstream::stream::{self, DirectGetError, DirectGetErrorKind};
use async_nats::jetstream::{self as js, ErrorCode, kv};
use async_nats::{Client, Statistics, StatusCode};
use echocache_core::StoreError;

use crate::bucket::{BucketOptions, ensure_stream, open_or_create_bucket};

/// `checked_at` before the bucket was ever opened or checked.
const NEVER: u64 = u64::MAX;

/// The bucket of a store and what it needs to open or re-create it.
pub(crate) struct BucketHandle {
    name: String,
    /// The open bucket; `None` until a `connect` store first reaches the server.
    current: RwLock<Option<Arc<kv::Store>>>,
    /// `None`: a user's handle given without a JetStream context, used as it is.
    recovery: Option<Recovery>,
}

/// How a store re-opens and re-creates its bucket.
struct Recovery {
    js: js::Context,
    client: Client,
    /// The client's statistics, for its connection count.
    stats: Arc<Statistics>,
    recipe: Recipe,
    /// Fail at once while the client is not connected (stores that own their client).
    fail_fast: bool,
    /// The client's connection count when the bucket was last opened or checked.
    checked_at: AtomicU64,
    /// Bumped each time the bucket is opened, checked or re-created.
    generation: AtomicU64,
    /// One open, check or re-creation at a time.
    reopen: tokio::sync::Mutex<()>,
}

/// What a lost bucket is re-created with.
enum Recipe {
    /// A `connect` store: [`open_or_create_bucket`] with these options.
    Options(BucketOptions),
    /// A user's handle: its stream, with the configuration the handle was opened with.
    Stream(Box<stream::Config>),
}

impl BucketHandle {
    /// A user's bucket handle, used as it is: never re-opened nor re-created.
    pub(crate) fn fixed(kv: kv::Store) -> Self {
        Self {
            name: kv.name.clone(),
            current: RwLock::new(Some(Arc::new(kv))),
            recovery: None,
        }
    }

    /// The bucket `name` of a store that owns its client: opened (or created) with
    /// `options` on first use unless `kv` is already open, checked after every reconnect,
    /// re-created when lost.
    pub(crate) fn owned(
        name: &str,
        js: js::Context,
        options: BucketOptions,
        kv: Option<kv::Store>,
        checked_at: u64,
    ) -> Self {
        let checked_at = if kv.is_some() { checked_at } else { NEVER };
        Self {
            name: name.to_owned(),
            current: RwLock::new(kv.map(Arc::new)),
            recovery: Some(Recovery {
                stats: js.client().statistics(),
                client: js.client(),
                js,
                recipe: Recipe::Options(options),
                fail_fast: true,
                checked_at: AtomicU64::new(checked_at),
                generation: AtomicU64::new(0),
                reopen: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// This handle, re-creating a lost bucket through `js` with the stream configuration
    /// the bucket had when it was opened. A handle that can already re-create its bucket
    /// is kept as it is.
    pub(crate) fn recreating_with(self, js: js::Context) -> Self {
        if self.recovery.is_some() {
            return self;
        }
        let Some(kv) = self.current() else {
            return self;
        };
        let config = kv.stream.cached_info().config.clone();
        let client = js.client();
        let stats = client.statistics();
        let checked_at = connects(&stats);
        Self {
            name: self.name,
            current: self.current,
            recovery: Some(Recovery {
                js,
                client,
                stats,
                recipe: Recipe::Stream(Box::new(config)),
                // The user's client, the user's request timeouts.
                fail_fast: false,
                checked_at: AtomicU64::new(checked_at),
                generation: AtomicU64::new(0),
                reopen: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// The bucket's name.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The open bucket, if any.
    pub(crate) fn current(&self) -> Option<Arc<kv::Store>> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The JetStream context the store opens and re-creates its bucket through, if any.
    pub(crate) fn jetstream(&self) -> Option<&js::Context> {
        self.recovery.as_ref().map(|r| &r.js)
    }

    /// Whether the bucket allows per-message TTLs: from the open bucket, else from the
    /// options it will be created with.
    #[cfg(feature = "server-2-11")]
    pub(crate) fn allows_message_ttl(&self) -> bool {
        match (self.current(), self.recovery.as_ref().map(|r| &r.recipe)) {
            (Some(kv), _) => kv.stream.cached_info().config.allow_message_ttl,
            (None, Some(Recipe::Options(options))) => options.has_limit_markers(),
            (None, _) => false,
        }
    }

    /// Runs `op` on the bucket: opens or checks it first when needed, and re-creates it
    /// and runs `op` once more when `op` failed because the bucket does not exist.
    pub(crate) async fn run<T, F, Fut>(&self, op: F) -> Result<T, StoreError>
    where
        F: Fn(Arc<kv::Store>) -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let Some(recovery) = &self.recovery else {
            let kv = self.current().ok_or_else(not_open)?;
            return op(kv).await;
        };
        if recovery.fail_fast && recovery.client.connection_state() != State::Connected {
            return Err(StoreError::backend_msg(
                "not connected to the nats server (the client reconnects in the background)",
            ));
        }
        let (kv, generation) = self.ready(recovery).await?;
        match op(kv).await {
            Err(err) if is_bucket_missing(&err) => {
                let (kv, _) = self.reopen(recovery, Some(generation)).await?;
                op(kv).await
            }
            outcome => outcome,
        }
    }

    /// The bucket, opened or checked first when there is none yet or the client has
    /// reconnected since the last check; and the generation it belongs to.
    async fn ready(&self, recovery: &Recovery) -> Result<(Arc<kv::Store>, u64), StoreError> {
        let generation = recovery.generation.load(Ordering::Acquire);
        if let Some(kv) = self.current()
            && recovery.checked_at.load(Ordering::Acquire) == connects(&recovery.stats)
        {
            return Ok((kv, generation));
        }
        self.reopen(recovery, None).await
    }

    /// Opens, checks or re-creates the bucket, unless another operation did so while this
    /// one waited for the lock. `lost_in`: the generation in which an operation found the
    /// bucket missing (`None`: opening, or checking after a reconnect).
    async fn reopen(
        &self,
        recovery: &Recovery,
        lost_in: Option<u64>,
    ) -> Result<(Arc<kv::Store>, u64), StoreError> {
        let _one_at_a_time = recovery.reopen.lock().await;
        let generation = recovery.generation.load(Ordering::Acquire);
        if let Some(kv) = self.current() {
            let done = match lost_in {
                Some(lost_in) => generation != lost_in,
                None => recovery.checked_at.load(Ordering::Acquire) == connects(&recovery.stats),
            };
            if done {
                return Ok((kv, generation));
            }
        }
        // Read before the requests: a reconnect during them gets its own check.
        let connects_now = connects(&recovery.stats);
        let kv = match &recovery.recipe {
            Recipe::Options(options) => Arc::new(
                open_or_create_bucket(&recovery.js, &self.name, options)
                    .await
                    .map_err(StoreError::backend)?,
            ),
            Recipe::Stream(config) => {
                ensure_stream(&recovery.js, config)
                    .await
                    .map_err(StoreError::backend)?;
                self.current().ok_or_else(not_open)?
            }
        };
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Some(kv.clone());
        recovery.checked_at.store(connects_now, Ordering::Release);
        let generation = recovery.generation.fetch_add(1, Ordering::AcqRel) + 1;
        Ok((kv, generation))
    }
}

/// How many times a client has connected (the first connection and every reconnect).
fn connects(stats: &Statistics) -> u64 {
    stats.connects.load(Ordering::Acquire)
}

fn not_open() -> StoreError {
    StoreError::backend_msg("the kv bucket is not open")
}

/// Whether `err` says that the bucket's stream does not exist, as async-nats 0.51 reports
/// it: a write's ack is a "no responders" status (`PublishErrorKind::StreamNotFound`), a
/// direct get answers 503 "no responders", the JetStream API answers error code 10059
/// (stream not found). A direct get of a missing stream may also go unanswered (NATS 2.9
/// drops it) and time out: that cannot be told from a slow server, so it is left to the
/// check after a reconnect and to the next write.
pub(crate) fn is_bucket_missing(err: &StoreError) -> bool {
    let mut cause: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(err) = cause {
        if let Some(err) = err.downcast_ref::<PublishError>()
            && err.kind() == PublishErrorKind::StreamNotFound
        {
            return true;
        }
        if let Some(err) = err.downcast_ref::<DirectGetError>()
            && matches!(
                err.kind(),
                DirectGetErrorKind::ErrorResponse(StatusCode::NO_RESPONDERS, _)
            )
        {
            return true;
        }
        if let Some(err) = err.downcast_ref::<js::Error>()
            && err.error_code() == ErrorCode::STREAM_NOT_FOUND
        {
            return true;
        }
        cause = err.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_streams_are_recognised_through_the_chain() {
        let put = kv::PutError::with_source(
            kv::PutErrorKind::Ack,
            PublishError::new(PublishErrorKind::StreamNotFound),
        );
        assert!(is_bucket_missing(&StoreError::backend(put)));
        let update: kv::UpdateError = PublishError::new(PublishErrorKind::StreamNotFound).into();
        assert!(is_bucket_missing(&StoreError::backend(update)));
        let get = kv::EntryError::with_source(
            kv::EntryErrorKind::Other,
            DirectGetError::new(DirectGetErrorKind::ErrorResponse(
                StatusCode::NO_RESPONDERS,
                "no responders".into(),
            )),
        );
        assert!(is_bucket_missing(&StoreError::backend(get)));
    }

    #[test]
    fn other_failures_are_not_a_missing_bucket() {
        let timed_out = kv::PutError::with_source(
            kv::PutErrorKind::Ack,
            PublishError::new(PublishErrorKind::TimedOut),
        );
        assert!(!is_bucket_missing(&StoreError::backend(timed_out)));
        let wrong_revision: kv::UpdateError =
            PublishError::new(PublishErrorKind::WrongLastSequence).into();
        assert!(!is_bucket_missing(&StoreError::backend(wrong_revision)));
        let not_found = kv::EntryError::with_source(
            kv::EntryErrorKind::Other,
            DirectGetError::new(DirectGetErrorKind::NotFound),
        );
        assert!(!is_bucket_missing(&StoreError::backend(not_found)));
        assert!(!is_bucket_missing(&StoreError::backend_msg("down")));
        assert!(!is_bucket_missing(&StoreError::decode_msg("bad bytes")));
    }
}
