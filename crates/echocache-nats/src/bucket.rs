//! [`open_or_create_bucket`]: a KV bucket that works on NATS 2.9 as on current servers.
//!
//! async-nats ≥ 0.41 creates buckets with `create_key_value`, which first queries the
//! account's JetStream info (for its API level); async-nats cannot parse NATS 2.9's answer
//! (the version Debian ships), so bucket creation fails there. A KV
//! bucket is only a JetStream stream with a fixed shape, so this module creates that
//! stream itself with `create_stream` and opens it with `get_key_value`, which both work
//! on 2.9 and later.

use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

use async_nats::jetstream::context::{CreateStreamErrorKind, GetStreamErrorKind};
use async_nats::jetstream::stream::{self, DiscardPolicy, StorageType};
use async_nats::jetstream::{self as js, ErrorCode, kv};

/// The most revisions per key a KV bucket can keep (a NATS limit).
pub const MAX_HISTORY: u8 = 64;

/// Settings for a bucket [`open_or_create_bucket`] creates. They are ignored when the
/// bucket already exists.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use echocache_nats::BucketOptions;
/// use async_nats::jetstream::stream::StorageType;
///
/// let options = BucketOptions::new()
///     .max_age(Duration::from_secs(3600))
///     .storage(StorageType::Memory);
/// ```
#[must_use]
#[derive(Debug, Clone)]
pub struct BucketOptions {
    description: Option<String>,
    history: u8,
    max_age: Duration,
    max_bytes: i64,
    max_value_size: i32,
    storage: StorageType,
    replicas: usize,
    #[cfg(feature = "server-2-11")]
    limit_markers: Option<Duration>,
}

impl Default for BucketOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl BucketOptions {
    /// Options with every default: one revision per key, no age or size limit, file
    /// storage, one replica.
    pub fn new() -> Self {
        Self {
            description: None,
            history: 1,
            max_age: Duration::ZERO,
            max_bytes: -1,
            max_value_size: -1,
            storage: StorageType::File,
            replicas: 1,
            #[cfg(feature = "server-2-11")]
            limit_markers: None,
        }
    }

    /// A human-readable description of the bucket.
    ///
    /// # Default
    ///
    /// None.
    pub fn description(self, description: impl Into<String>) -> Self {
        Self {
            description: Some(description.into()),
            ..self
        }
    }

    /// How many revisions of each key the bucket keeps, from 1 to [`MAX_HISTORY`]. A cache
    /// needs only the latest.
    ///
    /// # Default
    ///
    /// 1.
    pub fn history(self, history: u8) -> Self {
        Self { history, ..self }
    }

    /// How long the server keeps a message (an entry, a lock, a removal marker), counted
    /// from its write, in whole seconds on the server. Zero means for ever.
    ///
    /// This bounds the bucket's size; [`NatsStore::ttl`](crate::NatsStore::ttl) is what
    /// stops an old entry from being served. Keep it above the lock ttls the caches use
    /// (their `load_timeout` plus a margin), or a held lock may vanish early.
    ///
    /// # Default
    ///
    /// Zero: no limit.
    pub fn max_age(self, max_age: Duration) -> Self {
        Self { max_age, ..self }
    }

    /// The most bytes the bucket may hold; once full, writes fail. `-1` means no limit.
    ///
    /// # Default
    ///
    /// -1: no limit.
    pub fn max_bytes(self, max_bytes: i64) -> Self {
        Self { max_bytes, ..self }
    }

    /// The largest value the server accepts, in bytes. `-1` means the server's limit.
    ///
    /// # Default
    ///
    /// -1: the server's `max_payload`.
    pub fn max_value_size(self, max_value_size: i32) -> Self {
        Self {
            max_value_size,
            ..self
        }
    }

    /// Where the server keeps the bucket: on disk ([`StorageType::File`]) or only in
    /// memory ([`StorageType::Memory`], lost when the server restarts).
    ///
    /// # Default
    ///
    /// [`StorageType::File`].
    pub fn storage(self, storage: StorageType) -> Self {
        Self { storage, ..self }
    }

    /// How many servers of a cluster keep a copy, from 1 to 5.
    ///
    /// # Default
    ///
    /// 1.
    pub fn replicas(self, replicas: usize) -> Self {
        Self { replicas, ..self }
    }

    /// Allows per-message TTLs in the bucket (NATS 2.11 or later), which
    /// [`NatsStore::server_ttl`](crate::NatsStore::server_ttl) uses, and keeps the marker
    /// the server leaves when it removes an expired message for `marker_ttl` (at least
    /// one second).
    ///
    /// Servers older than 2.11 ignore this setting and create the bucket without it;
    /// `server_ttl` then reports that the bucket does not allow per-message TTLs.
    ///
    /// # Default
    ///
    /// None: no per-message TTLs.
    #[cfg(feature = "server-2-11")]
    #[cfg_attr(docsrs, doc(cfg(feature = "server-2-11")))]
    pub fn limit_markers(self, marker_ttl: Duration) -> Self {
        Self {
            limit_markers: Some(marker_ttl),
            ..self
        }
    }

    /// The stream configuration of the bucket: the shape async-nats's
    /// `create_key_value` gives a bucket (as of 0.51), without the account query whose
    /// NATS 2.9 answer async-nats cannot parse.
    fn stream_config(&self, bucket: &str) -> stream::Config {
        stream::Config {
            name: stream_name(bucket),
            description: self.description.clone(),
            subjects: vec![format!("$KV.{bucket}.>")],
            max_messages_per_subject: i64::from(self.history),
            max_bytes: self.max_bytes,
            max_age: self.max_age,
            max_message_size: self.max_value_size,
            storage: self.storage,
            num_replicas: self.replicas,
            // Writes carrying `Nats-Rollup` (purge) may replace a key's history.
            allow_rollup: true,
            // Messages are removed by KV delete/purge markers, never by the stream API.
            deny_delete: true,
            deny_purge: false,
            // Reads of a key's last value go to any replica (`$JS.API.DIRECT.GET`).
            allow_direct: true,
            mirror_direct: false,
            // A full bucket refuses new writes instead of dropping other keys.
            discard: DiscardPolicy::New,
            #[cfg(feature = "server-2-11")]
            allow_message_ttl: self.limit_markers.is_some(),
            #[cfg(feature = "server-2-11")]
            subject_delete_marker_ttl: self.limit_markers,
            ..Default::default()
        }
    }

    /// Whether buckets created with these options allow per-message TTLs.
    #[cfg(feature = "server-2-11")]
    pub(crate) fn has_limit_markers(&self) -> bool {
        self.limit_markers.is_some()
    }

    /// Checks the bucket name and the options without asking the server.
    pub(crate) fn validate(&self, bucket: &str) -> Result<(), BucketError> {
        if bucket.is_empty()
            || !bucket
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(BucketError::invalid(
                "bucket names are non-empty and made of ASCII letters, digits, `-` and `_`",
            ));
        }
        if !(1..=MAX_HISTORY).contains(&self.history) {
            return Err(BucketError::invalid("history must be between 1 and 64"));
        }
        if !(1..=5).contains(&self.replicas) {
            return Err(BucketError::invalid("replicas must be between 1 and 5"));
        }
        #[cfg(feature = "server-2-11")]
        if self
            .limit_markers
            .is_some_and(|ttl| ttl < Duration::from_secs(1))
        {
            return Err(BucketError::invalid(
                "limit_markers must be at least one second",
            ));
        }
        Ok(())
    }
}

/// The stream behind bucket `bucket`.
fn stream_name(bucket: &str) -> String {
    format!("KV_{bucket}")
}

/// Opens the KV bucket `bucket`, creating it with `options` when it does not exist.
///
/// Works on NATS 2.9 (where async-nats's `create_key_value` fails) as on current servers:
/// the bucket's stream is created directly with the configuration a KV bucket has
/// (subjects `$KV.{bucket}.>`, `history` revisions per key, rollups allowed, deletes
/// through the stream API denied, direct gets, discard-new), then opened with
/// `get_key_value`. An existing bucket is opened as it is, whoever created it; if another
/// process creates it at the same moment, this one opens theirs.
///
/// # Errors
///
/// A [`BucketError`] when the name or options are invalid, or the server cannot open or
/// create the bucket (JetStream disabled, no permission, limits reached, a stream
/// `KV_{bucket}` of another shape).
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use echocache_nats::{BucketOptions, open_or_create_bucket};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let client = async_nats::connect("nats://127.0.0.1:4222").await?;
/// let js = async_nats::jetstream::new(client);
/// let options = BucketOptions::new().max_age(Duration::from_secs(24 * 3600));
/// let kv = open_or_create_bucket(&js, "echocache", &options).await?;
/// # let _ = kv;
/// # Ok(())
/// # }
/// ```
pub async fn open_or_create_bucket(
    js: &js::Context,
    bucket: &str,
    options: &BucketOptions,
) -> Result<kv::Store, BucketError> {
    options.validate(bucket)?;
    match js.get_stream(stream_name(bucket)).await {
        Ok(_) => return open(js, bucket).await,
        Err(err) if is_stream_not_found(err.kind()) => {}
        Err(err) => return Err(BucketError::with_source(BucketErrorKind::Open, err)),
    }
    match js.create_stream(options.stream_config(bucket)).await {
        Ok(_) => open(js, bucket).await,
        // Created by another process since we looked: open theirs.
        Err(err) if is_name_taken(err.kind()) => open(js, bucket).await,
        Err(err) => Err(BucketError::with_source(BucketErrorKind::Create, err)),
    }
}

/// Creates the stream `config` describes unless a stream of that name exists (whatever
/// its configuration): what re-creates a user's bucket that the server has lost.
pub(crate) async fn ensure_stream(
    js: &js::Context,
    config: &stream::Config,
) -> Result<(), BucketError> {
    match js.get_stream(&config.name).await {
        Ok(_) => return Ok(()),
        Err(err) if is_stream_not_found(err.kind()) => {}
        Err(err) => return Err(BucketError::with_source(BucketErrorKind::Open, err)),
    }
    match js.create_stream(config.clone()).await {
        // Created, or created by another process since we looked.
        Ok(_) => Ok(()),
        Err(err) if is_name_taken(err.kind()) => Ok(()),
        Err(err) => Err(BucketError::with_source(BucketErrorKind::Create, err)),
    }
}

async fn open(js: &js::Context, bucket: &str) -> Result<kv::Store, BucketError> {
    js.get_key_value(bucket)
        .await
        .map_err(|err| BucketError::with_source(BucketErrorKind::Open, err))
}

fn is_stream_not_found(kind: GetStreamErrorKind) -> bool {
    matches!(kind, GetStreamErrorKind::JetStream(err) if err.error_code() == ErrorCode::STREAM_NOT_FOUND)
}

fn is_name_taken(kind: CreateStreamErrorKind) -> bool {
    matches!(kind, CreateStreamErrorKind::JetStream(err) if err.error_code() == ErrorCode::STREAM_NAME_EXIST)
}

/// What [`open_or_create_bucket`] could not do.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BucketErrorKind {
    /// The bucket name or an option is invalid; nothing was sent to the server.
    Invalid,
    /// The bucket exists (or was just created) but could not be opened.
    Open,
    /// The bucket did not exist and could not be created.
    Create,
}

/// [`open_or_create_bucket`] failed; [`kind`](Self::kind) says at which step, the
/// [`source`](StdError::source) (an async-nats error, outside this crate's semver) says why.
pub struct BucketError {
    kind: BucketErrorKind,
    reason: Option<&'static str>,
    source: Option<Box<dyn StdError + Send + Sync + 'static>>,
}

impl BucketError {
    fn invalid(reason: &'static str) -> Self {
        Self {
            kind: BucketErrorKind::Invalid,
            reason: Some(reason),
            source: None,
        }
    }

    fn with_source(kind: BucketErrorKind, source: impl StdError + Send + Sync + 'static) -> Self {
        Self {
            kind,
            reason: None,
            source: Some(Box::new(source)),
        }
    }

    /// The step that failed.
    pub fn kind(&self) -> BucketErrorKind {
        self.kind
    }
}

impl fmt::Display for BucketError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.kind, self.reason) {
            (BucketErrorKind::Invalid, Some(reason)) => write!(f, "invalid bucket: {reason}"),
            (BucketErrorKind::Invalid, None) => f.write_str("invalid bucket"),
            (BucketErrorKind::Open, _) => f.write_str("could not open the kv bucket"),
            (BucketErrorKind::Create, _) => f.write_str("could not create the kv bucket"),
        }
    }
}

impl fmt::Debug for BucketError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BucketError")
            .field("kind", &self.kind)
            .field("reason", &self.reason)
            .field("source", &self.source)
            .finish()
    }
}

impl StdError for BucketError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|s| s as &(dyn StdError + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_config_has_the_kv_shape() {
        let config = BucketOptions::new()
            .max_age(Duration::from_secs(60))
            .description("d")
            .stream_config("b-1");
        assert_eq!(config.name, "KV_b-1");
        assert_eq!(config.subjects, ["$KV.b-1.>"]);
        assert_eq!(config.max_messages_per_subject, 1);
        assert_eq!(config.max_age, Duration::from_secs(60));
        assert!(config.allow_rollup && config.deny_delete && config.allow_direct);
        assert!(!config.deny_purge && !config.mirror_direct);
        assert_eq!(config.discard, DiscardPolicy::New);
        assert_eq!(config.num_replicas, 1);
        assert_eq!(config.description.as_deref(), Some("d"));
    }

    #[test]
    fn invalid_names_and_options_are_rejected() {
        let ok = BucketOptions::new();
        assert!(ok.validate("cache_1-a").is_ok());
        for bad in ["", "a.b", "a b", "a*", "a>", "ü"] {
            let err = ok.validate(bad).unwrap_err();
            assert_eq!(err.kind(), BucketErrorKind::Invalid, "{bad:?}");
        }
        assert!(BucketOptions::new().history(0).validate("b").is_err());
        assert!(BucketOptions::new().history(65).validate("b").is_err());
        assert!(BucketOptions::new().history(64).validate("b").is_ok());
        assert!(BucketOptions::new().replicas(0).validate("b").is_err());
        assert!(BucketOptions::new().replicas(6).validate("b").is_err());
        assert_eq!(
            ok.validate("a.b").unwrap_err().to_string(),
            "invalid bucket: bucket names are non-empty and made of ASCII letters, digits, `-` and `_`"
        );
    }
}
