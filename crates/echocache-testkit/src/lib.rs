//! Test support for echocache's own tests (not published): Redis and NATS servers of a
//! test's own on free loopback ports, which the test may stall (`SIGSTOP`), resume
//! (`SIGCONT`), kill and restart without touching the shared servers, and a bounded poll.
//!
//! Every server is a child process killed and reaped when its handle is dropped, on every
//! path, panics included.

pub mod fleet;
pub mod isolation;
pub mod outage;
pub mod tiered;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A free TCP port on 127.0.0.1 (free when asked; the OS may hand it out again later).
///
/// # Panics
///
/// When the OS gives no port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// Which server an [`OwnServer`] runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// `redis-server`, nothing kept on disk.
    Redis,
    /// `nats-server -js`, JetStream data in the given folder.
    Nats(PathBuf),
}

/// A server child of this test on its own loopback port.
#[derive(Debug)]
pub struct OwnServer {
    kind: Kind,
    port: u16,
    child: Option<Child>,
}

impl OwnServer {
    /// Starts `redis-server` on a free port and waits until it accepts connections.
    ///
    /// # Panics
    ///
    /// When `redis-server` is not installed or does not start within 5 s.
    pub fn redis() -> Self {
        Self::start(Kind::Redis, free_port())
    }

    /// Starts `nats-server -js` on a free port, with its JetStream data in a new folder
    /// under the system's temporary folder, and waits until it accepts connections.
    ///
    /// # Panics
    ///
    /// As [`redis`](Self::redis).
    pub fn nats() -> Self {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!(
            "echocache-testkit-nats-{}-{port}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("a folder for JetStream");
        Self::start(Kind::Nats(dir), port)
    }

    /// Starts the server `kind` on `port` (a restart on the same port, or a server that
    /// comes up after its clients).
    ///
    /// # Panics
    ///
    /// As [`redis`](Self::redis).
    pub fn start(kind: Kind, port: u16) -> Self {
        let mut server = Self {
            kind,
            port,
            child: None,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let port = self.port.to_string();
        let mut command = match &self.kind {
            Kind::Redis => {
                let mut c = Command::new("redis-server");
                c.args(["--bind", "127.0.0.1", "--port", &port]).args([
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--daemonize",
                    "no",
                ]);
                c
            }
            Kind::Nats(dir) => {
                let mut c = Command::new(nats_server_binary());
                c.args(["-a", "127.0.0.1", "-p", &port, "-js", "-sd"])
                    .arg(dir);
                c
            }
        };
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "this test starts its own {:?} server and could not ({e}): install \
                     redis-server / nats-server (cargo xtask test does)",
                    self.kind
                )
            });
        // Owned at once, so the child is killed and reaped on every path.
        self.child = Some(child);
        for _ in 0..500 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                // NATS accepts connections a moment before JetStream is ready.
                if matches!(self.kind, Kind::Nats(_)) {
                    std::thread::sleep(Duration::from_millis(100));
                }
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!(
            "{:?} on port {} did not start within 5 s",
            self.kind, self.port
        );
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:{port}` or `nats://127.0.0.1:{port}`.
    pub fn url(&self) -> String {
        match self.kind {
            Kind::Redis => format!("redis://127.0.0.1:{}", self.port),
            Kind::Nats(_) => format!("nats://127.0.0.1:{}", self.port),
        }
    }

    fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("the server runs");
        let status = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .expect("kill(1)");
        assert!(status.success(), "kill {signal} failed");
    }

    /// Stops the process (`SIGSTOP`): its sockets stay open and nothing answers, as a
    /// server stuck in a long pause.
    pub fn stall(&self) {
        self.signal("-STOP");
    }

    /// Lets a stalled process go on (`SIGCONT`).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    /// Kills the process (`SIGKILL`) and reaps it: connections are refused from now on.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server and starts it again on the same port (same JetStream folder).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        self.kill();
        if let Kind::Nats(dir) = &self.kind {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// The `nats-server` to run: `ECHOCACHE_NATS_SERVER` when set, else the one on `PATH`,
/// else Debian's `/usr/sbin/nats-server`.
pub fn nats_server_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("ECHOCACHE_NATS_SERVER") {
        return path.into();
    }
    let on_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|dir| dir.join("nats-server"))
        .find(|p| p.is_file());
    on_path.unwrap_or_else(|| Path::new("/usr/sbin/nats-server").to_owned())
}

/// Every concatenation of at most `max` of `parts`, the empty string included: the
/// prefixes and keys of the brute-force collision checks.
pub fn concatenations(parts: &[&str], max: usize) -> Vec<String> {
    let mut all = vec![String::new()];
    let mut last = vec![String::new()];
    for _ in 0..max {
        last = last
            .iter()
            .flat_map(|s| parts.iter().map(move |p| format!("{s}{p}")))
            .collect();
        all.extend(last.iter().cloned());
    }
    all
}

/// Polls `check` every 20 ms until it returns `Some`, for at most `bound`; returns the
/// value and how long it took. A bound on a wait, not a timing assertion.
///
/// # Panics
///
/// When `check` never returned `Some` within `bound`, naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, bound: Duration, mut check: F) -> (T, Duration)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = tokio::time::Instant::now();
    loop {
        if let Some(value) = check().await {
            return (value, started.elapsed());
        }
        if started.elapsed() >= bound {
            panic!("{what}: not within {bound:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
