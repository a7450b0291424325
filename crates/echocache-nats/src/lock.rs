//! The refresh lock: one KV key per cache key holding the owner's token and deadline.
//!
//! Payload: `{deadline}|{token}` in UTF-8, where `deadline` is the lock's expiry in
//! milliseconds since the Unix epoch (decimal) and `token` the owner's
//! [`LockToken`]. The payload is split at the first `|`, so a token may contain `|`
//! (Go bug 23 treated such a token as a malformed lock and let it steal any lock).
//!
//! - **Take** ([`try_lock`]): write the payload expecting the key to be absent (revision
//!   0, what KV `create` does). If the key exists, read it: a live lock means "held"; a
//!   released lock (delete or purge marker), an expired lock (a crashed holder, Go bug
//!   23) or a malformed payload is taken over by a write that expects exactly the
//!   revision read, so of several processes racing for it only one wins.
//! - **Release** ([`unlock`]): read the lock; when it still holds our token, purge it
//!   expecting the revision read. A lock that is absent, released, or taken over by
//!   another owner is left alone and the release is `Ok` (Go bug 22).
//! - **Extend** ([`extend`]): read the lock; when it is a live lock holding our token,
//!   write the same token with the new deadline expecting the revision read. One attempt:
//!   only the owner writes a live lock, so a changed revision means it is no longer ours.
//!
//! Both loops are bounded by [`MAX_ATTEMPTS`] and never recurse (Go bug 23). Deadlines
//! compare wall clocks of different processes: keep the hosts' clocks in sync (NTP), as
//! for the entries' ages.
//!
//! **Go format** ([`LockFormat::Go`], the stores made by `go_echocache_compatible`): the
//! key is the Go echocache's (`{prefix}.{md5("lock:" + key)}`) and the payload Go's
//! `{token}|{acquired at, RFC 3339 to the second}`, which holds no deadline: a lock is live
//! until its acquisition second + 1 s + the ttl of the caller looking at it (the extra
//! second covers the truncation, so a lock never ends before its ttl). The same steps as
//! above, revision-checked; unlike Go v1.2.0, another owner's expired lock is taken over
//! (Go's own never expires for others, bug 23), and a payload is split at its first `|`.

use std::time::{Duration, SystemTime};

use async_nats::jetstream::kv::{self, Operation, UpdateErrorKind};
use echocache_core::{LockToken, StoreError};

/// How many conditional writes [`try_lock`] and [`unlock`] attempt before giving up.
const MAX_ATTEMPTS: usize = 3;

/// A lock as stored: owner token and deadline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LockRecord {
    /// Expiry, milliseconds since the Unix epoch.
    pub(crate) deadline_ms: u64,
    /// The owner's token.
    pub(crate) token: String,
}

impl LockRecord {
    /// The payload written to the lock key.
    pub(crate) fn to_payload(&self) -> Vec<u8> {
        format!("{}|{}", self.deadline_ms, self.token).into_bytes()
    }

    /// Reads a payload back; `None` when it is malformed.
    pub(crate) fn parse(payload: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(payload).ok()?;
        let (deadline, token) = text.split_once('|')?;
        if deadline.is_empty() || !deadline.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(Self {
            deadline_ms: deadline.parse().ok()?,
            token: token.to_owned(),
        })
    }

    /// Whether the lock's deadline has passed at `now_ms`.
    pub(crate) fn is_expired(&self, now_ms: u64) -> bool {
        self.deadline_ms <= now_ms
    }
}

/// Milliseconds since the Unix epoch at `time` (0 before the epoch, saturating after
/// year 584 million).
pub(crate) fn millis_since_epoch(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// `ttl` in whole milliseconds, rounded up so that a lock never ends before its ttl.
fn ceil_millis(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX)
}

/// How a lock's payload is written and read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LockFormat {
    /// `{deadline ms}|{token}`.
    Native,
    /// The Go echocache's `{token}|{acquired at, RFC 3339 seconds}`.
    Go,
}

impl LockFormat {
    /// The payload of a lock held by `token` from `now` for `ttl`.
    fn payload(self, token: &str, now: SystemTime, ttl: Duration) -> Vec<u8> {
        match self {
            LockFormat::Native => LockRecord {
                deadline_ms: millis_since_epoch(now).saturating_add(ceil_millis(ttl)),
                token: token.to_owned(),
            }
            .to_payload(),
            LockFormat::Go => {
                let secs = now
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                let second = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
                // Years 0000–9999 only; a clock outside them writes the epoch (read as
                // an old lock), never panics.
                let at = echocache_core::go_format::format_time(second)
                    .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_owned());
                format!("{token}|{at}").into_bytes()
            }
        }
    }

    /// The lock a payload holds, judged with `ttl` where the payload has no deadline;
    /// `None` when it is malformed.
    fn parse(self, payload: &[u8], ttl: Duration) -> Option<LockRecord> {
        match self {
            LockFormat::Native => LockRecord::parse(payload),
            LockFormat::Go => {
                let text = std::str::from_utf8(payload).ok()?;
                let (token, at) = text.split_once('|')?;
                let acquired = echocache_core::go_format::parse_time(at).ok()?;
                let acquired_ms = millis_since_epoch(acquired);
                Some(LockRecord {
                    deadline_ms: acquired_ms
                        .saturating_add(1_000)
                        .saturating_add(ceil_millis(ttl)),
                    token: token.to_owned(),
                })
            }
        }
    }
}

/// Whether a write failed because the key's revision was not the one expected.
fn is_wrong_revision(err: &kv::UpdateError) -> bool {
    err.kind() == UpdateErrorKind::WrongLastRevision
}

/// Takes the lock at `lock_key` for `ttl`, or returns `None` when a live lock is held by
/// another owner (or other owners kept winning the race for it).
pub(crate) async fn try_lock(
    kv: &kv::Store,
    format: LockFormat,
    lock_key: &str,
    ttl: Duration,
) -> Result<Option<LockToken>, StoreError> {
    let token = LockToken::generate();
    let payload: bytes::Bytes = format
        .payload(token.as_str(), SystemTime::now(), ttl)
        .into();
    // Optimistic first attempt: the key has never been written (revision 0 = `create`).
    let mut expected_revision = 0;
    for _ in 0..MAX_ATTEMPTS {
        match kv
            .update(lock_key, payload.clone(), expected_revision)
            .await
        {
            Ok(_) => return Ok(Some(token)),
            Err(err) if is_wrong_revision(&err) => {}
            Err(err) => return Err(StoreError::backend(err)),
        }
        // The key exists: see what holds it.
        let current = kv.entry(lock_key).await.map_err(StoreError::backend)?;
        expected_revision = match current {
            // Gone between our write and this read: try to create it again.
            None => 0,
            // Released (delete or purge marker): free to take.
            Some(entry) if entry.operation != Operation::Put => entry.revision,
            Some(entry) => match format.parse(&entry.value, ttl) {
                Some(record) if !record.is_expired(millis_since_epoch(SystemTime::now())) => {
                    return Ok(None);
                }
                // Expired (a crashed holder) or malformed: take it over, but only if
                // nobody else changes it first (Go bug 23).
                _ => entry.revision,
            },
        };
    }
    // Other owners won every race: someone holds or is taking the lock.
    Ok(None)
}

/// Releases the lock at `lock_key` if `token` still owns it; otherwise leaves it.
pub(crate) async fn unlock(
    kv: &kv::Store,
    format: LockFormat,
    lock_key: &str,
    token: &LockToken,
) -> Result<(), StoreError> {
    for _ in 0..MAX_ATTEMPTS {
        let Some(entry) = kv.entry(lock_key).await.map_err(StoreError::backend)? else {
            // Never taken or already gone (Go bug 22: that is not an error).
            return Ok(());
        };
        if entry.operation != Operation::Put {
            return Ok(());
        }
        // Only the token matters here (the ttl only judges expiry).
        match format.parse(&entry.value, Duration::ZERO) {
            Some(record) if record.token == token.as_str() => {}
            // Another owner's lock, or not ours to judge.
            _ => return Ok(()),
        }
        match kv
            .purge_expect_revision(lock_key, Some(entry.revision))
            .await
        {
            Ok(()) => return Ok(()),
            // Changed since we read it (e.g. taken over after expiry): look again.
            Err(err) if is_wrong_revision(&err) => {}
            Err(err) => return Err(StoreError::backend(err)),
        }
    }
    // The lock kept changing under us, so it was no longer ours each time we looked.
    Ok(())
}

/// Moves the deadline of the lock at `lock_key` to `ttl` from now if `token` still owns
/// it and it has not expired; returns whether it did.
///
/// An expired lock is not revived even when it still holds `token`: another process may
/// already have read it as free, and its takeover must not be undone.
pub(crate) async fn extend(
    kv: &kv::Store,
    format: LockFormat,
    lock_key: &str,
    token: &LockToken,
    ttl: Duration,
) -> Result<bool, StoreError> {
    let Some(entry) = kv.entry(lock_key).await.map_err(StoreError::backend)? else {
        return Ok(false);
    };
    if entry.operation != Operation::Put {
        // Released.
        return Ok(false);
    }
    let now = SystemTime::now();
    match format.parse(&entry.value, ttl) {
        Some(record)
            if record.token == token.as_str() && !record.is_expired(millis_since_epoch(now)) => {}
        // Another owner's, expired, or malformed.
        _ => return Ok(false),
    }
    let payload = format.payload(token.as_str(), now, ttl);
    match kv.update(lock_key, payload.into(), entry.revision).await {
        Ok(_) => Ok(true),
        // Changed since we read it: released or taken over, so no longer ours.
        Err(err) if is_wrong_revision(&err) => Ok(false),
        Err(err) => Err(StoreError::backend(err)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_round_trips_with_any_token() {
        for token in ["abc", "", "a|b|c", "ünï ☃"] {
            let record = LockRecord {
                deadline_ms: 1_700_000_000_123,
                token: token.to_owned(),
            };
            let payload = record.to_payload();
            assert_eq!(LockRecord::parse(&payload), Some(record));
        }
        assert_eq!(
            LockRecord {
                deadline_ms: 5,
                token: "t".into()
            }
            .to_payload(),
            b"5|t"
        );
    }

    #[test]
    fn malformed_payloads_are_rejected() {
        for payload in [
            &b""[..],
            b"|t",
            b"12",
            b"-1|t",
            b"+1|t",
            b"1.5|t",
            b"99999999999999999999999|t",
            b"\xff|t",
        ] {
            assert_eq!(LockRecord::parse(payload), None, "{payload:?}");
        }
    }

    #[test]
    fn go_payloads_are_the_go_librarys() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(1_764_575_323_900);
        let payload = LockFormat::Go.payload("gotoken", at, Duration::from_secs(30));
        assert_eq!(payload, b"gotoken|2025-12-01T07:48:43Z");
        // Go writes its local offset; the instant is what counts.
        let go = b"gotoken|2025-12-01T08:48:43+01:00";
        let record = LockFormat::Go.parse(go, Duration::from_secs(30)).unwrap();
        assert_eq!(record.token, "gotoken");
        // Live until the acquisition second + 1 s + the ttl.
        assert_eq!(record.deadline_ms, 1_764_575_323_000 + 1_000 + 30_000);
        for malformed in [
            &b"no-bar"[..],
            b"t|yesterday",
            b"t|",
            b"\xff|2025-12-01T07:48:43Z",
        ] {
            assert_eq!(
                LockFormat::Go.parse(malformed, Duration::ZERO),
                None,
                "{malformed:?}"
            );
        }
    }

    #[test]
    fn expiry_is_inclusive_of_the_deadline() {
        let record = LockRecord {
            deadline_ms: 100,
            token: "t".into(),
        };
        assert!(!record.is_expired(99));
        assert!(record.is_expired(100));
        assert!(record.is_expired(101));
    }

    #[test]
    fn ttl_rounds_up_to_whole_milliseconds() {
        assert_eq!(ceil_millis(Duration::ZERO), 0);
        assert_eq!(ceil_millis(Duration::from_millis(200)), 200);
        assert_eq!(ceil_millis(Duration::from_micros(1)), 1);
        assert_eq!(ceil_millis(Duration::from_micros(1_500)), 2);
        assert_eq!(ceil_millis(Duration::MAX), u64::MAX);
        assert_eq!(millis_since_epoch(SystemTime::UNIX_EPOCH), 0);
    }
}
