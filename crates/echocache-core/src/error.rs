//! Errors: [`Error`] for fetches, [`StoreError`] for stores, [`BuildError`] for builders.

use std::any::Any;
use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;

/// Why a fetch returned no value.
///
/// Every caller that waited on the same load receives the same outcome: the same
/// `Arc` of the loader's error, or the same panic message.
///
/// # Display and source
///
/// The message carries the cause (`loader failed: connection refused`). For
/// [`Error::Load`] the loader's error is formatted with `{:#}`, so an [`anyhow`]-style
/// error prints its whole chain there (`loader failed: query users: connection refused`).
/// `Error<E>` implements [`std::error::Error`] for every `E: Debug + Display`, not only for
/// `E: std::error::Error`: that is what lets `?` turn an `Error<anyhow::Error>` into an
/// `anyhow::Error` (anyhow's error type is not a `std::error::Error` itself). The price:
/// [`source`](StdError::source) cannot reach into an arbitrary `E`. It continues the chain
/// below the loader's error where the type is known at run time (`std::io::Error`,
/// `Box<dyn Error + Send + Sync>`, `Box<dyn Error + Send>`, `Box<dyn Error>`,
/// `Arc<dyn Error + Send + Sync>`); for other types the loader's error itself is in the
/// message and in [`load_error`](Error::load_error), and its own sources are one
/// `.source()` away from there.
///
/// [`anyhow`]: https://docs.rs/anyhow
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use echocache_core::Error;
///
/// let err: Error<std::io::Error> = Error::Load(Arc::new(std::io::Error::other("db down")));
/// assert_eq!(err.to_string(), "loader failed: db down");
/// ```
#[non_exhaustive]
pub enum Error<E> {
    /// The loader returned an error; the same `Arc` is given to every waiter of that load.
    Load(Arc<E>),
    /// The loader panicked; every waiter gets the panic message and the cache stays usable.
    LoaderPanicked(String),
    /// The load took longer than the cache's `load_timeout` and was stopped.
    Timeout,
    /// A loader fetched its own key, directly or through other keys: waiting would deadlock.
    RecursiveLoad,
    /// The load's task was stopped before it finished (its runtime shut down).
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

/// The loader's error as a `dyn Error`, for the types whose error-ness can be seen at run
/// time (see "Display and source" on [`Error`]).
fn known_error<E: 'static>(e: &E) -> Option<&(dyn StdError + 'static)> {
    let any: &dyn Any = e;
    if let Some(e) = any.downcast_ref::<std::io::Error>() {
        return Some(e);
    }
    if let Some(e) = any.downcast_ref::<Box<dyn StdError + Send + Sync>>() {
        return Some(&**e);
    }
    if let Some(e) = any.downcast_ref::<Box<dyn StdError + Send>>() {
        return Some(&**e);
    }
    if let Some(e) = any.downcast_ref::<Box<dyn StdError>>() {
        return Some(&**e);
    }
    if let Some(e) = any.downcast_ref::<Arc<dyn StdError + Send + Sync>>() {
        return Some(&**e);
    }
    None
}

impl<E: fmt::Display + 'static> fmt::Display for Error<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Load(e) => match known_error(&**e) {
                // Its sources follow through `source()`: only its own message here.
                Some(known) => write!(f, "loader failed: {known}"),
                // `{:#}`: anyhow and eyre print their whole chain; others ignore the flag.
                None => write!(f, "loader failed: {e:#}"),
            },
            Error::LoaderPanicked(message) => write!(f, "loader panicked: {message}"),
            Error::Timeout => f.write_str("load timed out: it ran past the load timeout"),
            Error::RecursiveLoad => {
                f.write_str("recursive load: a loader fetched a key whose load it is part of")
            }
            Error::Aborted => f.write_str("load aborted before it finished: its runtime shut down"),
        }
    }
}

/// Not `E: std::error::Error`: see "Display and source" on [`Error`].
impl<E: fmt::Debug + fmt::Display + 'static> StdError for Error<E> {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            Error::Load(e) => known_error(&**e).and_then(StdError::source),
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
    fn load_error_carries_the_loader_error_in_its_message() {
        let err: Error<DbDown> = Error::Load(Arc::new(DbDown));
        assert_eq!(err.to_string(), "loader failed: db down");
        // The cause is in the message, not repeated as a source.
        assert!(err.source().is_none());
        let err: Error<&str> = Error::Load(Arc::new("not found"));
        assert_eq!(err.to_string(), "loader failed: not found");
    }

    #[test]
    fn known_error_types_continue_the_chain_through_source() {
        let io = std::io::Error::other(DbDown);
        let err: Error<std::io::Error> = Error::Load(Arc::new(io));
        assert_eq!(err.to_string(), "loader failed: db down");
        #[derive(Debug, thiserror::Error)]
        #[error("query failed")]
        struct Query(#[source] DbDown);
        let boxed: Box<dyn StdError + Send + Sync> = Box::new(Query(DbDown));
        let err: Error<Box<dyn StdError + Send + Sync>> = Error::Load(Arc::new(boxed));
        assert_eq!(err.to_string(), "loader failed: query failed");
        assert_eq!(err.source().unwrap().to_string(), "db down");
    }

    #[test]
    fn every_variant_says_why() {
        for (err, message) in [
            (
                Error::<DbDown>::Timeout,
                "load timed out: it ran past the load timeout",
            ),
            (
                Error::LoaderPanicked("boom".into()),
                "loader panicked: boom",
            ),
            (
                Error::Aborted,
                "load aborted before it finished: its runtime shut down",
            ),
        ] {
            assert_eq!(err.to_string(), message);
        }
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
