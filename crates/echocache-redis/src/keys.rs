//! Redis key layout: `{prefix}:v:{key}` for data, `{prefix}:l:{key}` for locks.
//!
//! Data and locks live in distinct namespaces, so no user key can name a lock (Go bug 21:
//! the Go original stored the data of `lock:foo` under the lock key of `foo`). The prefix
//! is validated once, at construction.

use echocache_core::BuildError;

/// The longest prefix accepted, in bytes.
pub(crate) const MAX_PREFIX_LEN: usize = 256;

/// The namespace segments the store appends to the prefix.
const DATA: &str = ":v:";
const LOCK: &str = ":l:";

/// A validated prefix and the keys built from it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct KeySpace {
    prefix: Box<str>,
}

impl KeySpace {
    /// Validates `prefix`; see [`validate_prefix`].
    pub(crate) fn new(prefix: &str) -> Result<Self, BuildError> {
        validate_prefix(prefix)?;
        Ok(Self {
            prefix: prefix.into(),
        })
    }

    /// The prefix, as given.
    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `{prefix}:v:{key}`.
    pub(crate) fn data_key(&self, key: &str) -> String {
        self.build(DATA, key)
    }

    /// `{prefix}:l:{key}`.
    pub(crate) fn lock_key(&self, key: &str) -> String {
        self.build(LOCK, key)
    }

    fn build(&self, namespace: &str, key: &str) -> String {
        let mut out = String::with_capacity(self.prefix.len() + namespace.len() + key.len());
        out.push_str(&self.prefix);
        out.push_str(namespace);
        out.push_str(key);
        out
    }
}

fn invalid(reason: &'static str) -> BuildError {
    BuildError::InvalidSetting {
        setting: "prefix",
        reason,
    }
}

/// Checks a prefix: non-empty, at most [`MAX_PREFIX_LEN`] bytes, no whitespace or control
/// characters, and no `:`-separated segment equal to `v` or `l`.
///
/// The last rule keeps two stores with different prefixes apart: were `app:v` allowed, its
/// data key for `k` (`app:v:v:k`) would be the data key of `v:k` under the prefix `app`.
pub(crate) fn validate_prefix(prefix: &str) -> Result<(), BuildError> {
    if prefix.is_empty() {
        return Err(invalid("must not be empty"));
    }
    if prefix.len() > MAX_PREFIX_LEN {
        return Err(invalid("must be at most 256 bytes long"));
    }
    if prefix.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid("must not contain whitespace or control characters"));
    }
    if prefix
        .split(':')
        .any(|segment| segment == "v" || segment == "l")
    {
        return Err(invalid(
            "no `:`-separated segment may be `v` or `l`: the store appends `:v:` and `:l:` to the prefix",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(prefix: &str) -> &'static str {
        match KeySpace::new(prefix) {
            Err(BuildError::InvalidSetting { setting, reason }) => {
                assert_eq!(setting, "prefix");
                reason
            }
            other => panic!("{prefix:?} was accepted: {other:?}"),
        }
    }

    #[test]
    fn builds_data_and_lock_keys() {
        let keys = KeySpace::new("myapp").unwrap();
        assert_eq!(keys.prefix(), "myapp");
        assert_eq!(keys.data_key("greeting"), "myapp:v:greeting");
        assert_eq!(keys.lock_key("greeting"), "myapp:l:greeting");
        assert_eq!(keys.data_key(""), "myapp:v:");
        assert_eq!(keys.data_key("ünï code:*"), "myapp:v:ünï code:*");
    }

    #[test]
    fn user_keys_never_name_a_lock() {
        // Go bug 21: the data key of `lock:foo` was the lock key of `foo`.
        let keys = KeySpace::new("p").unwrap();
        for user_key in ["x", "l:x", "v:x", ":l:x", "lock:x"] {
            assert_ne!(keys.data_key(user_key), keys.lock_key("x"), "{user_key}");
            assert!(keys.data_key(user_key).starts_with("p:v:"));
        }
        assert_ne!(keys.lock_key("l:x"), keys.data_key("x"));
    }

    #[test]
    fn accepts_ordinary_prefixes() {
        for prefix in [
            "a",
            "myapp",
            "myapp:cache",
            "svc-1_users.v2",
            "{tenant}:cache",
            "ünïcode",
            "vv:ll",
            &"x".repeat(MAX_PREFIX_LEN),
        ] {
            assert!(KeySpace::new(prefix).is_ok(), "{prefix}");
        }
    }

    #[test]
    fn rejects_empty_long_and_odd_prefixes() {
        assert_eq!(reason(""), "must not be empty");
        assert_eq!(
            reason(&"x".repeat(MAX_PREFIX_LEN + 1)),
            "must be at most 256 bytes long"
        );
        for prefix in [
            "my app",
            "tab\there",
            "new\nline",
            "nul\0",
            "nbsp\u{a0}",
            "del\u{7f}",
        ] {
            assert!(reason(prefix).contains("whitespace"), "{prefix:?}");
        }
    }

    #[test]
    fn rejects_prefixes_that_overlap_another_prefix_namespace() {
        for prefix in ["v", "l", "app:v", "app:l", "app:v:x", "l:app"] {
            assert!(reason(prefix).contains("`v` or `l`"), "{prefix}");
        }
        // Why: `app:v` would share keys with `app`.
        let app = KeySpace::new("app").unwrap();
        assert_eq!(app.data_key("v:k"), "app:v:v:k");
    }

    #[test]
    fn the_error_names_the_setting() {
        let err = KeySpace::new("").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid setting `prefix`: must not be empty"
        );
    }
}
