//! [`Entry`]: a value and the wall-clock time it was written.

use std::fmt;
use std::time::{Duration, SystemTime};

/// A cached value and the wall-clock time at which it was written.
///
/// `written_at` is wall-clock time ([`SystemTime`]) so that processes sharing a remote
/// store agree on an entry's age.
///
/// # Examples
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use echocache_core::Entry;
///
/// let written = SystemTime::UNIX_EPOCH + Duration::from_secs(100);
/// let entry = Entry::new("hello", written);
/// assert_eq!(entry.age(written + Duration::from_secs(5)), Duration::from_secs(5));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Entry<V> {
    /// The cached value.
    pub value: V,
    /// When the value was written (loaded or inserted).
    pub written_at: SystemTime,
}

impl<V> Entry<V> {
    /// Makes an entry holding `value`, written at `written_at`.
    pub fn new(value: V, written_at: SystemTime) -> Self {
        Self { value, written_at }
    }

    /// The entry's age at `now`; zero when `written_at` lies in the future (clock skew
    /// between processes).
    pub fn age(&self, now: SystemTime) -> Duration {
        now.duration_since(self.written_at)
            .unwrap_or(Duration::ZERO)
    }
}

impl<V> fmt::Debug for Entry<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Values are never printed: they may be large or sensitive.
        f.debug_struct("Entry")
            .field("written_at", &self.written_at)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn age_saturates_for_future_timestamps() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(10);
        let entry = Entry::new(1u8, now + Duration::from_secs(3));
        assert_eq!(entry.age(now), Duration::ZERO);
        assert_eq!(
            entry.age(now + Duration::from_secs(4)),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn debug_does_not_print_the_value() {
        let entry = Entry::new("secret-value", SystemTime::UNIX_EPOCH);
        let printed = format!("{entry:?}");
        assert!(!printed.contains("secret-value"), "{printed}");
        assert!(printed.contains("written_at"));
    }
}
