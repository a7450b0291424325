//! Redis key layouts: echocache's own, `{prefix}:v:{key}` for data and `{prefix}:l:{key}`
//! for locks, and the Go echocache's, `{prefix}:{key}` and `{prefix}:lock:{key}`.
//!
//! In the native layout data and locks live in distinct namespaces, so no user key can
//! name a lock (Go bug 21: the Go original stores the data of `lock:foo` under the lock key
//! of `foo`). The Go layout keeps that flaw on purpose: it is what Go services read and
//! write. The prefix is validated once, at construction.

use echocache_core::BuildError;

/// The longest prefix accepted, in bytes.
pub(crate) const MAX_PREFIX_LEN: usize = 256;

/// The namespace segments the store appends to the prefix.
const DATA: &str = ":v:";
const LOCK: &str = ":l:";
/// The Go echocache's separator and lock namespace.
const GO_DATA: &str = ":";
const GO_LOCK: &str = ":lock:";

/// Which key layout a [`KeySpace`] builds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    /// `{prefix}:v:{key}` and `{prefix}:l:{key}`.
    Native,
    /// The Go echocache's `{prefix}:{key}` and `{prefix}:lock:{key}`.
    Go,
}

/// A validated prefix and the keys built from it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct KeySpace {
    prefix: Box<str>,
    layout: Layout,
}

impl KeySpace {
    /// The native layout under `prefix`; see [`validate_prefix`].
    pub(crate) fn new(prefix: &str) -> Result<Self, BuildError> {
        validate_prefix(prefix)?;
        Ok(Self {
            prefix: prefix.into(),
            layout: Layout::Native,
        })
    }

    /// The Go echocache's layout under `prefix`, used as given; see
    /// [`validate_go_prefix`].
    pub(crate) fn go(prefix: &str) -> Result<Self, BuildError> {
        validate_go_prefix(prefix)?;
        Ok(Self {
            prefix: prefix.into(),
            layout: Layout::Go,
        })
    }

    /// The prefix, as given.
    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `{prefix}:v:{key}`, or `{prefix}:{key}` in the Go layout.
    pub(crate) fn data_key(&self, key: &str) -> String {
        match self.layout {
            Layout::Native => self.build(DATA, key),
            Layout::Go => self.build(GO_DATA, key),
        }
    }

    /// `{prefix}:l:{key}`, or `{prefix}:lock:{key}` in the Go layout (which is also the
    /// data key of the user key `lock:{key}` there).
    pub(crate) fn lock_key(&self, key: &str) -> String {
        match self.layout {
            Layout::Native => self.build(LOCK, key),
            Layout::Go => self.build(GO_LOCK, key),
        }
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

/// Checks a prefix for the Go layout, which must use it exactly as the Go services do: at
/// most [`MAX_PREFIX_LEN`] bytes, no control characters, and no `:`-separated segment
/// equal to `v` or `l`. The empty prefix (Go then writes `:{key}`) and whitespace are
/// accepted: the Go library accepts them, and refusing one would make the store unable to
/// share that Go cache.
///
/// A control character (a trailing newline read from a file or an environment variable)
/// is a configuration mistake rather than a Go prefix, and gives keys that cannot be typed
/// in `redis-cli`. A `v` or `l` segment would put the Go keys inside a native store's
/// namespaces: the Go prefix `app:v` writes `app:v:k`, the data key of `k` in the native
/// store `app` (and `app:v:x` that of `x:k`); such a Go cache cannot be shared safely
/// beside native stores, so it is refused.
pub(crate) fn validate_go_prefix(prefix: &str) -> Result<(), BuildError> {
    if prefix.len() > MAX_PREFIX_LEN {
        return Err(invalid("must be at most 256 bytes long"));
    }
    if prefix.chars().any(char::is_control) {
        return Err(invalid("must not contain control characters"));
    }
    if prefix
        .split(':')
        .any(|segment| segment == "v" || segment == "l")
    {
        return Err(invalid(
            "no `:`-separated segment may be `v` or `l`: the Go keys would land in the \
             namespaces of a native store (`{prefix}:v:`, `{prefix}:l:`)",
        ));
    }
    Ok(())
}

/// Whether two stores' keys can never meet, whatever keys they are given (see
/// SECURITY.md): `go` says which of them use the Go layout. Two native stores with
/// different prefixes never meet (the `v`/`l` rule above). A Go store writes its keys as
/// given after `{prefix}:`, so it meets any other store whose prefix is its own or starts
/// with `{its prefix}:` (the Go key `v:k` under `app` is the native key `k` under `app`;
/// the Go key `x:k` under `app` is the Go key `k` under `app:x`): no rule on one prefix
/// can prevent that, only the choice of prefixes.
#[cfg(test)]
fn isolated(a: (&str, bool), b: (&str, bool)) -> bool {
    let ((pa, go_a), (pb, go_b)) = (a, b);
    if (pa, go_a) == (pb, go_b) {
        return true; // one store
    }
    let reaches = |go: &str, other: &str| other == go || other.starts_with(&format!("{go}:"));
    match (go_a, go_b) {
        (false, false) => true,
        (true, false) => !reaches(pa, pb),
        (false, true) => !reaches(pb, pa),
        (true, true) => !reaches(pa, pb) && !reaches(pb, pa),
    }
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
    fn builds_go_keys_as_the_go_library_does() {
        let keys = KeySpace::go("myapp").unwrap();
        assert_eq!(keys.prefix(), "myapp");
        assert_eq!(keys.data_key("greeting"), "myapp:greeting");
        assert_eq!(keys.lock_key("FirstKey"), "myapp:lock:FirstKey");
        assert_eq!(keys.data_key("a:b c*"), "myapp:a:b c*");
        // The prefix is used as given: no separator trimmed or added.
        assert_eq!(KeySpace::go("app:").unwrap().data_key("k"), "app::k");
        assert_eq!(KeySpace::go("").unwrap().data_key("k"), ":k");
        assert_eq!(KeySpace::go("").unwrap().lock_key("k"), ":lock:k");
    }

    #[test]
    fn the_go_layout_keeps_its_lock_collision() {
        // Known flaw of the Go format (Go bug 21), kept for compatibility: the data of the
        // user key `lock:x` is the lock of `x`.
        let keys = KeySpace::go("p").unwrap();
        assert_eq!(keys.data_key("lock:x"), keys.lock_key("x"));
        assert_eq!(keys.data_key("lock:x"), "p:lock:x");
    }

    #[test]
    fn go_prefixes_are_taken_as_go_takes_them() {
        for prefix in [
            "", "a", "vv", "lock", "app:x", "my app", "{tenant}", "ünï", "app:",
        ] {
            assert!(KeySpace::go(prefix).is_ok(), "{prefix:?}");
        }
        for prefix in [
            "app\n",
            "tab\there",
            "nul\0",
            "del\u{7f}",
            "v",
            "l",
            "app:v",
            "app:l:x",
        ] {
            assert!(
                matches!(
                    KeySpace::go(prefix),
                    Err(BuildError::InvalidSetting {
                        setting: "prefix",
                        ..
                    })
                ),
                "{prefix:?}"
            );
        }
        assert!(KeySpace::go(&"x".repeat(MAX_PREFIX_LEN + 1)).is_err());
    }

    /// Every store (layout, prefix) a constructor accepts among short prefixes, with every
    /// physical key it writes for short keys: no two stores claimed isolated share one,
    /// and the pairs not claimed isolated do (the brute force can find collisions).
    #[test]
    fn brute_force_finds_no_collision_between_isolated_prefixes() {
        use std::collections::HashMap;
        const PARTS: [&str; 6] = ["a", "v", "l", ":", "lock", "b"];
        let strings = |max| echocache_testkit::concatenations(&PARTS, max);
        let (prefixes, keys) = (strings(3), strings(3));
        let mut stores = Vec::new();
        for prefix in &prefixes {
            if let Ok(native) = KeySpace::new(prefix) {
                stores.push(((prefix.as_str(), false), native));
            }
            if let Ok(go) = KeySpace::go(prefix) {
                stores.push(((prefix.as_str(), true), go));
            }
        }
        // Physical key -> the stores writing it.
        let mut owners: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, (_, space)) in stores.iter().enumerate() {
            for key in &keys {
                for physical in [space.data_key(key), space.lock_key(key)] {
                    let list = owners.entry(physical).or_default();
                    if list.last() != Some(&i) {
                        list.push(i);
                    }
                }
            }
        }
        let (mut isolated_pairs_met, mut other_pairs_met) = (0, 0);
        for list in owners.values() {
            for (n, &a) in list.iter().enumerate() {
                for &b in &list[n + 1..] {
                    if isolated(stores[a].0, stores[b].0) {
                        isolated_pairs_met += 1;
                        eprintln!("collision: {:?} and {:?}", stores[a].0, stores[b].0);
                    } else {
                        other_pairs_met += 1;
                    }
                }
            }
        }
        assert!(stores.len() > 400, "{} stores", stores.len());
        assert_eq!(isolated_pairs_met, 0, "stores claimed isolated share keys");
        assert!(
            other_pairs_met > 0,
            "the brute force finds the known collisions"
        );
        // The claims, one by one.
        assert!(isolated(("a", false), ("a:b", false)), "native/native");
        assert!(isolated(("a", false), ("b", true)), "native/Go, unrelated");
        assert!(
            !isolated(("a", false), ("a", true)),
            "Go `v:k` is native `k`"
        );
        assert!(
            !isolated(("a:b", false), ("a", true)),
            "Go `b:v:k` is native `k`"
        );
        assert!(
            !isolated(("a", true), ("a:b", true)),
            "Go `b:k` is Go `k` under a:b"
        );
        assert!(isolated(("a", true), ("ab", true)), "Go/Go, unrelated");
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
