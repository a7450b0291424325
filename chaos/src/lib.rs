//! Helpers shared by the binaries of this package:
//!
//! - `echocache-chaos`: a bounded load on `EchoCache` and `LazyEchoCache` over Redis and
//!   NATS while the servers are killed and restarted, or stalled and resumed (by
//!   `cargo xtask chaos`), checking every value it gets back;
//! - `echocache-soak`: a bounded soak of `LazyEchoCache` over `LruStore` with a churning
//!   key set and an overflowing refresh queue, checking that memory and the in-flight and
//!   pending counts stay flat (`cargo xtask soak`).
//!
//! See `docs/ARCHITECTURE.md`, section "Chaos and soak".

mod latency;

pub use latency::{Latencies, Summary, latency};

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Command-line options as `--name value` pairs (and bare `--flag`s).
#[derive(Debug, Default)]
pub struct Args {
    values: HashMap<String, String>,
    flags: Vec<String>,
}

impl Args {
    /// Parses `args` (without the program name). `flags` names the options that take no
    /// value.
    ///
    /// # Errors
    ///
    /// A message for an argument that is not an option or lacks its value.
    pub fn parse(args: impl IntoIterator<Item = String>, flags: &[&str]) -> Result<Self, String> {
        let mut parsed = Self::default();
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let Some(name) = arg.strip_prefix("--") else {
                return Err(format!("unexpected argument `{arg}`"));
            };
            if flags.contains(&name) {
                parsed.flags.push(name.to_owned());
                continue;
            }
            let value = args
                .next()
                .ok_or_else(|| format!("`--{name}` needs a value"))?;
            parsed.values.insert(name.to_owned(), value);
        }
        Ok(parsed)
    }

    /// Whether the bare flag `--name` was given.
    pub fn flag(&self, name: &str) -> bool {
        self.flags.iter().any(|f| f == name)
    }

    /// The value of `--name`, if given.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// The value of `--name` parsed as a number, or `default`.
    ///
    /// # Errors
    ///
    /// A message when the value is not a number.
    pub fn number(&self, name: &str, default: u64) -> Result<u64, String> {
        match self.value(name) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| format!("`--{name}` must be a whole number, not `{v}`")),
        }
    }

    /// Names of the options given that are not in `known` (typos).
    pub fn unknown<'a>(&'a self, known: &[&str]) -> Vec<&'a str> {
        self.values
            .keys()
            .chain(self.flags.iter())
            .map(String::as_str)
            .filter(|name| !known.contains(name))
            .collect()
    }
}

/// A small, fast, seedable pseudo-random generator (SplitMix64); good enough to pick keys
/// and operations, and it spares the package a dependency.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// A process-wide seed source: every call gives another seed.
pub fn seed() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ NEXT.fetch_add(0x9E37_79B9, Ordering::Relaxed) ^ u64::from(std::process::id())
}

/// Installs a panic hook that counts every panic in the process (any thread, any task,
/// also panics that a library catches), then runs the default hook. Returns the counter.
pub fn count_panics() -> &'static AtomicU64 {
    static PANICS: AtomicU64 = AtomicU64::new(0);
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        default(info);
    }));
    &PANICS
}

/// This process's resident memory (`VmRSS` of `/proc/self/status`) in KiB, or `None` where
/// that file does not exist (not Linux).
pub fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Writes `text` to `path`, creating its folder.
///
/// # Errors
///
/// A message naming the path when the file cannot be written.
pub fn write_report(path: &Path, text: &str) -> Result<(), String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// A duration in milliseconds with one decimal, for reports.
pub fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// Whether `url` (`scheme://[user@]host:port`) names a loopback host; the chaos load sends
/// traffic only there.
pub fn is_loopback_url(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let host_port = rest.rsplit_once('@').map_or(rest, |(_, hp)| hp);
    let host_port = host_port.split(['/', '?']).next().unwrap_or(host_port);
    let host = if let Some(v6) = host_port.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        host_port.rsplit_once(':').map_or(host_port, |(h, _)| h)
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_options_and_flags() {
        let args = ["--seconds", "5", "--events-stdin", "--redis", "redis://x"].map(String::from);
        let args = Args::parse(args, &["events-stdin"]).unwrap();
        assert_eq!(args.number("seconds", 60).unwrap(), 5);
        assert_eq!(args.number("tasks", 64).unwrap(), 64);
        assert!(args.flag("events-stdin"));
        assert_eq!(args.value("redis"), Some("redis://x"));
        assert!(
            args.unknown(&["seconds", "events-stdin", "redis"])
                .is_empty()
        );
        assert!(Args::parse(["--seconds".to_owned()], &[]).is_err());
        assert!(Args::parse(["x".to_owned()], &[]).is_err());
    }

    #[test]
    fn only_loopback_urls_pass() {
        assert!(is_loopback_url("redis://127.0.0.1:6379"));
        assert!(is_loopback_url("nats://localhost:4222"));
        assert!(is_loopback_url("redis://user:pw@127.0.0.2:7000/0"));
        assert!(is_loopback_url("redis://[::1]:6379"));
        assert!(!is_loopback_url("redis://10.0.0.1:6379"));
        assert!(!is_loopback_url("nats://example.com:4222"));
    }

    #[test]
    fn rng_stays_below_its_bound() {
        let mut rng = Rng::new(7);
        assert!((0..1000).all(|_| rng.below(10) < 10));
    }
}
