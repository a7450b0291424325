//! `cargo xtask chaos` and `cargo xtask soak`: the bounded reliability runs of the
//! `echocache-chaos` package (see `docs/ARCHITECTURE.md`, "Chaos and soak").
//!
//! - `chaos --seconds N` (default 60) starts its own `redis-server` and `nats-server -js`
//!   on free ports of 127.0.0.1 (never the shared servers), with their data in a temporary
//!   folder removed at the end; runs the `echocache-chaos` load against them; and, owning
//!   the server processes, injects faults in turn during the run: kills (SIGKILL) and
//!   restarts, and stalls (SIGSTOP for a few seconds, sockets left open, then SIGCONT).
//!   It tells the load about each fault on its stdin (`down redis`, `up redis`,
//!   `stall nats`, `resume nats`, …) so that it can measure the time to recover and the
//!   fetch latency in each phase. The report is printed and written to
//!   `target/echocache-chaos/report.md`.
//! - `soak --seconds N` (default 120) runs `echocache-soak`, which needs no server; its
//!   report goes to `target/echocache-chaos/soak.md`.
//!
//! Both build the package in release mode first, then run the binary directly, so that
//! the load's clock starts when the binary is ready, not when cargo is done, and a load
//! that does not stop can be killed (it is this process's child).

use std::io::{BufRead, BufReader, Write};
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::services::{Kind, Nats, Redis, free_port, wait_until_up};

/// How many faults a run injects, alternating Redis and NATS, two kills then two stalls
/// (see [`Fault::nth`]): one every `N / (FAULTS + 1)` seconds, so that the last restart or
/// SIGCONT leaves time to recover before the load ends.
const FAULTS: u32 = 8;

/// One fault of the schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fault {
    on_redis: bool,
    /// SIGSTOP then SIGCONT; otherwise SIGKILL then a restart.
    stall: bool,
}

impl Fault {
    /// The `i`-th fault (from 1): Redis on odd `i`, NATS on even; kills for `i` in 1..=2,
    /// stalls for 3..=4, and so on, so that each server is killed and stalled in turn.
    fn nth(i: u32) -> Self {
        Self {
            on_redis: i % 2 == 1,
            stall: (i - 1) / 2 % 2 == 1,
        }
    }

    fn server(self) -> &'static str {
        if self.on_redis { "redis" } else { "nats" }
    }

    /// The lines the load reads on stdin when the fault begins and ends.
    fn events(self) -> (String, String) {
        let (begin, end) = if self.stall {
            ("stall", "resume")
        } else {
            ("down", "up")
        };
        (
            format!("{begin} {}", self.server()),
            format!("{end} {}", self.server()),
        )
    }
}

/// `cargo xtask chaos [--seconds N]`.
pub(crate) fn chaos(args: &[String]) -> Result<(), String> {
    let seconds = seconds(args, 60)?;
    if seconds < 10 {
        return Err("chaos needs `--seconds` of at least 10 (faults every N/9 s)".into());
    }
    crate::cargo(&["build", "--release", "-p", "echocache-chaos"], &[])?;
    let binary = release_binary("echocache-chaos")?;
    let report = target_dir().join("echocache-chaos").join("report.md");

    let dir = TempDir::new("echocache-chaos")?;
    let mut redis = OwnServer::<Redis>::start(dir.path())?;
    let mut nats = OwnServer::<Nats>::start(dir.path())?;
    eprintln!(
        "xtask: own servers: redis://{} and nats://{} (data in {})",
        redis.addr,
        nats.addr,
        dir.path().display()
    );

    // The load's run takes N s, then at most: tasks ending (5 bounds of 5 s), recovery
    // (30 s), shutdowns and cleanup (about 20 s). Past this, it is stuck: kill it.
    let bound = Duration::from_secs(seconds + 25 + 30 + 20 + 30);
    let mut load = Command::new(&binary)
        .args(["--redis", &format!("redis://{}", redis.addr)])
        .args(["--nats", &format!("nats://{}", nats.addr)])
        .args(["--seconds", &seconds.to_string()])
        .args(["--recovery-seconds", "30"])
        .arg("--report")
        .arg(&report)
        .arg("--events-stdin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", binary.display()))?;
    let mut events = load.stdin.take().ok_or("no stdin for the load")?;
    let stdout = load.stdout.take().ok_or("no stdout for the load")?;
    let (ready_tx, ready_rx) = mpsc::channel();
    let echo = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line.starts_with("chaos: ready") {
                let _ = ready_tx.send(());
            }
            println!("{line}");
        }
    });
    let started = Instant::now();
    let result = (|| -> Result<(), String> {
        // The fault schedule starts when the load does.
        loop {
            if ready_rx.recv_timeout(Duration::from_millis(100)).is_ok() {
                break;
            }
            if let Some(status) = load.try_wait().map_err(|e| e.to_string())? {
                return Err(format!("the chaos load ended before it started ({status})"));
            }
            if started.elapsed() > Duration::from_secs(60) {
                return Err("the chaos load did not start within 60 s".into());
            }
        }
        let ready = Instant::now();
        let interval = Duration::from_secs(seconds) / (FAULTS + 1);
        let downtime = interval
            .mul_f64(0.3)
            .clamp(Duration::from_millis(500), Duration::from_secs(3));
        // "A few seconds": long enough for the caches' circuit breakers to open and probe
        // (1 s cool-down) a couple of times.
        let stall_time = interval
            .mul_f64(0.45)
            .clamp(Duration::from_secs(1), Duration::from_secs(4));
        let mut notes = Vec::new();
        for i in 1..=FAULTS {
            if !sleep_while_running(&mut load, ready + interval * i)? {
                break;
            }
            let fault = Fault::nth(i);
            let name = fault.server();
            let server: &mut dyn Faulty = if fault.on_redis {
                &mut redis
            } else {
                &mut nats
            };
            let (begin, end) = fault.events();
            let what = if fault.stall {
                server.stall()
            } else {
                server.kill();
                Ok(())
            };
            if let Err(e) = what {
                notes.push(format!("fault {i} on {name} failed: {e}"));
                eprintln!("xtask: fault {i} on {name} failed: {e}");
                continue;
            }
            let _ = writeln!(events, "{begin}");
            let _ = events.flush();
            eprintln!(
                "xtask: fault {i}/{FAULTS}: {} {name} at {:.1} s",
                if fault.stall {
                    "stalled (SIGSTOP)"
                } else {
                    "killed (SIGKILL)"
                },
                ready.elapsed().as_secs_f64()
            );
            let hold = if fault.stall { stall_time } else { downtime };
            let running = sleep_while_running(&mut load, Instant::now() + hold)?;
            // A stalled server is resumed even when the load ended meanwhile.
            let back = if fault.stall {
                server.resume()
            } else if running {
                server.spawn()
            } else {
                break;
            };
            let _ = writeln!(events, "{end}");
            let _ = events.flush();
            eprintln!(
                "xtask: fault {i}/{FAULTS}: {} {name} at {:.1} s",
                if fault.stall { "resumed" } else { "restarted" },
                ready.elapsed().as_secs_f64()
            );
            let up = back.and_then(|()| server.wait_up());
            if let Err(e) = up {
                notes.push(format!("fault {i} on {name}: not back: {e}"));
                eprintln!("xtask: fault {i} on {name}: not back: {e}");
            }
            if !running {
                break;
            }
        }
        // The load stops by itself; past the bound it is stuck.
        let status = loop {
            if let Some(status) = load.try_wait().map_err(|e| e.to_string())? {
                break status;
            }
            if ready.elapsed() > bound {
                let _ = load.kill();
                let _ = load.wait();
                return Err(format!(
                    "the chaos load did not stop within {} s: killed",
                    bound.as_secs()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        if !notes.is_empty() {
            return Err(notes.join("; "));
        }
        if status.success() {
            Ok(())
        } else {
            Err(format!(
                "the chaos run failed ({status}); see {}",
                report.display()
            ))
        }
    })();
    if result.is_err() && load.try_wait().ok().flatten().is_none() {
        let _ = load.kill();
        let _ = load.wait();
    }
    drop(events);
    let _ = echo.join();
    drop(redis);
    drop(nats);
    drop(dir);
    result
}

/// `cargo xtask soak [--seconds N]`.
pub(crate) fn soak(args: &[String]) -> Result<(), String> {
    let seconds = seconds(args, 120)?;
    if seconds < 60 {
        return Err("soak needs `--seconds` of at least 60 (a memory slope needs samples)".into());
    }
    crate::cargo(&["build", "--release", "-p", "echocache-chaos"], &[])?;
    let binary = release_binary("echocache-soak")?;
    let report = target_dir().join("echocache-chaos").join("soak.md");
    let mut soak = Command::new(&binary)
        .args(["--seconds", &seconds.to_string()])
        .arg("--report")
        .arg(&report)
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", binary.display()))?;
    let bound = Duration::from_secs(seconds + 60);
    let started = Instant::now();
    let status = loop {
        if let Some(status) = soak.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if started.elapsed() > bound {
            let _ = soak.kill();
            let _ = soak.wait();
            return Err(format!(
                "the soak did not stop within {} s: killed",
                bound.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "the soak failed ({status}); see {}",
            report.display()
        ))
    }
}

/// `--seconds N` (or `--seconds=N`) from `args`, else `default`.
fn seconds(args: &[String], default: u64) -> Result<u64, String> {
    let mut value = None;
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        if arg == "--seconds" {
            value = Some(iter.next().ok_or("`--seconds` needs a number")?.clone());
        } else if let Some(v) = arg.strip_prefix("--seconds=") {
            value = Some(v.to_owned());
        } else {
            return Err(format!("unexpected argument `{arg}` (only `--seconds N`)"));
        }
    }
    match value {
        None => Ok(default),
        Some(v) => v
            .parse()
            .map_err(|_| format!("`--seconds` must be a whole number, not `{v}`")),
    }
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::workspace_root().join("target"))
}

fn release_binary(name: &str) -> Result<PathBuf, String> {
    let path = target_dir()
        .join("release")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    if path.exists() {
        Ok(path)
    } else {
        Err(format!("{} was not built", path.display()))
    }
}

/// Sleeps until `until` while `child` runs; `Ok(false)` when it ended first.
fn sleep_while_running(child: &mut Child, until: Instant) -> Result<bool, String> {
    loop {
        if child.try_wait().map_err(|e| e.to_string())?.is_some() {
            return Ok(false);
        }
        let now = Instant::now();
        if now >= until {
            return Ok(true);
        }
        std::thread::sleep((until - now).min(Duration::from_millis(50)));
    }
}

/// A temporary folder, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Result<Self, String> {
        let path = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
        std::fs::create_dir_all(&path)
            .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        Ok(Self(path))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A server this command started on a free loopback port: it may kill and restart it
/// (same port, same data folder). Killed on drop.
struct OwnServer<K> {
    addr: SocketAddr,
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
    kind: PhantomData<K>,
}

impl<K: Kind> OwnServer<K> {
    fn start(dir: &Path) -> Result<Self, String> {
        let port = free_port()?;
        let data = dir.join(K::BINARY);
        std::fs::create_dir_all(&data)
            .map_err(|e| format!("cannot create {}: {e}", data.display()))?;
        let mut server = Self {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            args: K::server_args(port, &data),
            log: dir.join(format!("{}.log", K::BINARY)),
            child: None,
            kind: PhantomData,
        };
        server.spawn()?;
        server.wait_up()?;
        Ok(server)
    }

    /// Starts the server process (its output appended to a log in the data folder).
    fn spawn(&mut self) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| format!("cannot open {}: {e}", self.log.display()))?;
        let err = log.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new(K::BINARY)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("{}: {e} ({})", K::BINARY, K::HOW_TO_GET))?;
        self.child = Some(child);
        Ok(())
    }

    /// Waits (bounded) until the server answers.
    fn wait_up(&mut self) -> Result<(), String> {
        wait_until_up::<K>(self.addr, &mut self.child).map_err(|e| {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            format!("{e}; its log ends with:\n{}", tail.join("\n"))
        })
    }

    /// SIGKILL (what `Child::kill` sends on Unix), then reaps the process.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends `signal` (`-STOP`, `-CONT`) to the server process with kill(1).
    fn signal(&self, signal: &str) -> Result<(), String> {
        let child = self.child.as_ref().ok_or("the server is not running")?;
        let status = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .map_err(|e| format!("kill(1): {e}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("kill {signal} {} failed ({status})", child.id()))
        }
    }
}

/// What the fault schedule does to a server, whichever it is.
trait Faulty {
    /// SIGKILL, then reap.
    fn kill(&mut self);
    /// Starts the server again (same port, same data).
    fn spawn(&mut self) -> Result<(), String>;
    /// Waits (bounded) until it answers.
    fn wait_up(&mut self) -> Result<(), String>;
    /// SIGSTOP: the process stops, its sockets stay open, nothing answers.
    fn stall(&mut self) -> Result<(), String>;
    /// SIGCONT.
    fn resume(&mut self) -> Result<(), String>;
}

impl<K: Kind> Faulty for OwnServer<K> {
    fn kill(&mut self) {
        OwnServer::kill(self);
    }

    fn spawn(&mut self) -> Result<(), String> {
        OwnServer::spawn(self)
    }

    fn wait_up(&mut self) -> Result<(), String> {
        OwnServer::wait_up(self)
    }

    fn stall(&mut self) -> Result<(), String> {
        self.signal("-STOP")
    }

    fn resume(&mut self) -> Result<(), String> {
        self.signal("-CONT")
    }
}

impl<K> Drop for OwnServer<K> {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_seconds() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(seconds(&args(&[]), 60).unwrap(), 60);
        assert_eq!(seconds(&args(&["--seconds", "5"]), 60).unwrap(), 5);
        assert_eq!(seconds(&args(&["--seconds=7"]), 60).unwrap(), 7);
        assert!(seconds(&args(&["--seconds"]), 60).is_err());
        assert!(seconds(&args(&["--seconds", "x"]), 60).is_err());
        assert!(seconds(&args(&["--other"]), 60).is_err());
    }

    #[test]
    fn each_server_is_killed_and_stalled_in_turn() {
        let faults: Vec<(&str, bool)> = (1..=FAULTS)
            .map(Fault::nth)
            .map(|f| (f.server(), f.stall))
            .collect();
        assert_eq!(
            faults,
            [
                ("redis", false),
                ("nats", false),
                ("redis", true),
                ("nats", true),
                ("redis", false),
                ("nats", false),
                ("redis", true),
                ("nats", true),
            ]
        );
        let (begin, end) = Fault::nth(4).events();
        assert_eq!(
            (begin.as_str(), end.as_str()),
            ("stall nats", "resume nats")
        );
        let (begin, end) = Fault::nth(1).events();
        assert_eq!((begin.as_str(), end.as_str()), ("down redis", "up redis"));
    }
}
