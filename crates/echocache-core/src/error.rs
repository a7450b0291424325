//! Errors: [`Error`] for fetches, [`StoreError`] for stores, [`BuildError`] for builders.

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;

/// Why a fetch returned no value.
///
/// Every caller that waited on the same load receives the same outcome: the same
/// `Arc` of the loader's error, or the same panic message.
#[non_exhaustive]
#[derive(thiserror::Error)]
pub enum Error<E> {
    /// The loader returned an error; the same `Arc` is given to every waiter of that load.
    #[error("loader failed")]
    Load(#[source] Arc<E>),
    /// The loader panicked; every waiter gets the panic message and the cache stays usable.
    #[error("loader panicked: {0}")]
    LoaderPanicked(String),
    /// The load took longer than the cache's `load_timeout` and was stopped.
    #[error("load timed out")]
    Timeout,
    /// A loader fetched its own key, directly or through other keys: waiting would deadlock.
    #[error("recursive load: a loader fetched a key whose load it is part of")]
    RecursiveLoad,
    /// The load's task was stopped before it finished (its runtime shut down).
    #[error("load aborted before it finished")]
    Aborted,
}

impl<E> Error<E> {
    /// The loader's error, when this is [`Error::Load`].
    pub fn load_error(&self) -> Option<&Arc<E>> {
        match self {
            Error::Load(e) => Some(e),
            _ => None,
        }
    }
}

impl<E> Clone for Error<E> {
    fn clone(&self) -> Self {
        match self {
            Error::Load(e) => Error::Load(Arc::clone(e)),
            Error::LoaderPanicked(m) => Error::LoaderPanicked(m.clone()),
            Error::Timeout => Error::Timeout,
            Error::RecursiveLoad => Error::RecursiveLoad,
            Error::Aborted => Error::Aborted,
        }
    }
}

impl<E: fmt::Debug> fmt::Debug for Error<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Load(e) => f.debug_tuple("Load").field(e).finish(),
            Error::LoaderPanicked(m) => f.debug_tuple("LoaderPanicked").field(m).finish(),
            Error::Timeout => f.write_str("Timeout"),
            Error::RecursiveLoad => f.write_str("RecursiveLoad"),
            Error::Aborted => f.write_str("Aborted"),
        }
    }
}

type BoxError = Box<dyn StdError + Send + Sync + 'static>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StoreErrorKind {
    Backend,
    Decode,
    Timeout,
    CircuitOpen,
}

/// A store operation failed.
///
/// Made by a store with [`StoreError::backend`] (the backend could not be reached or
/// refused the command) or [`StoreError::decode`] (the stored bytes could not be read
/// back as a value). The underlying error is the [`source`](StdError::source); its type is
/// not part of this crate's semver contract.
///
/// # Examples
///
/// ```
/// use echocache_core::StoreError;
///
/// let err = StoreError::decode(std::io::Error::other("bad format byte 0x07"));
/// assert!(err.is_decode());
/// assert_eq!(err.to_string(), "store value could not be decoded");
/// ```
pub struct StoreError {
    kind: StoreErrorKind,
    source: BoxError,
}

impl StoreError {
    /// The backend failed: unreachable, timed out, refused the command.
    pub fn backend(err: impl StdError + Send + Sync + 'static) -> Self {
        Self {
            kind: StoreErrorKind::Backend,
            source: Box::new(err),
        }
    }

    /// The stored bytes could not be decoded into a value (corrupt, foreign or too large).
    ///
    /// The caches count these separately and overwrite the entry with a fresh load.
    pub fn decode(err: impl StdError + Send + Sync + 'static) -> Self {
        Self {
            kind: StoreErrorKind::Decode,
            source: Box::new(err),
        }
    }

    /// A backend error from a message, for stores whose client reports plain text.
    pub fn backend_msg(message: impl Into<String>) -> Self {
        Self {
            kind: StoreErrorKind::Backend,
            source: message.into().into(),
        }
    }

    /// A decode error from a message.
    pub fn decode_msg(message: impl Into<String>) -> Self {
        Self {
            kind: StoreErrorKind::Decode,
            source: message.into().into(),
        }
    }

    /// The store call did not answer within the cache's `store_timeout` and was given up.
    ///
    /// Made by the caches, not by stores.
    pub fn timeout(limit: std::time::Duration) -> Self {
        Self {
            kind: StoreErrorKind::Timeout,
            source: format!("no answer within the store timeout of {limit:?}").into(),
        }
    }

    /// The store was not called: the cache's circuit breaker is open after consecutive
    /// store failures, and the store is skipped until a probe finds it answering again.
    ///
    /// Made by the caches, not by stores.
    pub fn circuit_open() -> Self {
        Self {
            kind: StoreErrorKind::CircuitOpen,
            source: "the store failed repeatedly; it is skipped until it answers again".into(),
        }
    }

    /// Whether the stored bytes could not be decoded (as opposed to a backend failure).
    pub fn is_decode(&self) -> bool {
        self.kind == StoreErrorKind::Decode
    }

    /// Whether the call was given up after the cache's store timeout.
    pub fn is_timeout(&self) -> bool {
        self.kind == StoreErrorKind::Timeout
    }

    /// Whether the call was skipped because the cache's circuit breaker is open.
    pub fn is_circuit_open(&self) -> bool {
        self.kind == StoreErrorKind::CircuitOpen
    }

    /// Whether this error says the backend is unwell (failed, timed out or skipped), as
    /// opposed to unreadable bytes: what the circuit breaker counts.
    pub(crate) fn is_outage(&self) -> bool {
        matches!(self.kind, StoreErrorKind::Backend | StoreErrorKind::Timeout)
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            StoreErrorKind::Backend => f.write_str("store backend failed"),
            StoreErrorKind::Decode => f.write_str("store value could not be decoded"),
            StoreErrorKind::Timeout => f.write_str("store call timed out"),
            StoreErrorKind::CircuitOpen => f.write_str("store skipped: circuit breaker open"),
        }
    }
}

impl fmt::Debug for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreError")
            .field("kind", &self.kind)
            .field("source", &self.source)
            .finish()
    }
}

impl StdError for StoreError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&*self.source)
    }
}

/// A builder was given settings that cannot work; the message names the setting.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// A setting has a value that cannot work, e.g. a zero capacity or timeout.
    #[error("invalid setting `{setting}`: {reason}")]
    InvalidSetting {
        /// The builder method whose value is wrong.
        setting: &'static str,
        /// Why it is wrong.
        reason: &'static str,
    },
    /// `build()` was called outside a tokio runtime; background workers need one.
    #[error("no tokio runtime: build the cache from within a tokio runtime")]
    NoRuntime,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("db down")]
    struct DbDown;

    #[test]
    fn load_error_exposes_the_loader_error_as_source() {
        let err: Error<DbDown> = Error::Load(Arc::new(DbDown));
        assert_eq!(err.to_string(), "loader failed");
        assert_eq!(
            err.source().map(|s| s.to_string()).as_deref(),
            Some("db down")
        );
    }

    #[test]
    fn store_error_keeps_kind_and_source() {
        let err = StoreError::backend(DbDown);
        assert!(!err.is_decode());
        assert_eq!(err.to_string(), "store backend failed");
        assert_eq!(err.source().unwrap().to_string(), "db down");
        assert!(StoreError::decode_msg("x").is_decode());
    }

    #[test]
    fn clone_shares_the_arc() {
        let err: Error<DbDown> = Error::Load(Arc::new(DbDown));
        let copy = err.clone();
        assert!(Arc::ptr_eq(
            err.load_error().unwrap(),
            copy.load_error().unwrap()
        ));
    }
}
