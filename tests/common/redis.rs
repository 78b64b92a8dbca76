//! A throwaway `redis-server` for tests and benchmarks: a child process on a free loopback port,
//! in a directory of its own, without persistence; killed (and its directory removed) when
//! dropped. Standard library only, so that any crate of the workspace can include it:
//!
//! ```ignore
//! #[path = "../../tests/common/redis.rs"]
//! mod redis_server;
//! ```
//!
//! Tests call [`RedisServer::start`] (or [`start_with`](RedisServer::start_with),
//! [`launch`](RedisServer::launch)): `None` when `KEEPFRESH_SKIP_REDIS=1`, a panic when
//! `redis-server` is not installed or does not start. Code that can do without Redis (the
//! benchmarks) calls [`RedisServer::try_launch`]: `None` in both cases.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// A `redis-server` child on a loopback port, in its own directory, without persistence;
/// killed when dropped.
pub struct RedisServer {
    pub port: u16,
    dir: PathBuf,
    args: Vec<String>,
    /// Whether the port speaks TLS (then readiness is an accepted connection, not a PONG).
    tls: bool,
    child: Option<Child>,
}

impl RedisServer {
    /// A running server, or `None` when `KEEPFRESH_SKIP_REDIS=1`.
    pub fn start() -> Option<Self> {
        Self::start_with(&[])
    }

    /// [`start`](Self::start) with more `redis-server` arguments.
    pub fn start_with(args: &[&str]) -> Option<Self> {
        Self::launch(args, false)
    }

    /// A running server with these arguments (`tls`: the port is a `--tls-port`), or `None`
    /// when `KEEPFRESH_SKIP_REDIS=1`.
    ///
    /// # Panics
    /// When `redis-server` is not installed, or does not start on any of five free ports.
    pub fn launch(args: &[&str], tls: bool) -> Option<Self> {
        if std::env::var("KEEPFRESH_SKIP_REDIS").as_deref() == Ok("1") {
            eprintln!("KEEPFRESH_SKIP_REDIS=1: skipping a test that needs redis-server");
            return None;
        }
        assert!(
            installed(),
            "redis-server is not installed (or not on the PATH): these tests need it. Install it \
             with `apt-get install -y redis-server`, or set KEEPFRESH_SKIP_REDIS=1 to skip them."
        );
        Some(
            Self::try_launch(args, tls)
                .expect("redis-server did not start on any of five free ports"),
        )
    }

    /// A running server, or `None` when `redis-server` is not installed or does not start on
    /// any of five free ports. Ignores `KEEPFRESH_SKIP_REDIS`.
    pub fn try_launch(args: &[&str], tls: bool) -> Option<Self> {
        if !installed() {
            return None;
        }
        static NEXT: AtomicU32 = AtomicU32::new(0);
        // Another process may take the free port between our probe and the server's bind.
        for _ in 0..5 {
            let port = free_port();
            let dir = std::env::temp_dir().join(format!(
                "keepfresh-redis-{}-{}-{port}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&dir).expect("a temporary directory");
            let mut server = RedisServer {
                port,
                dir,
                args: args.iter().map(|a| (*a).to_owned()).collect(),
                tls,
                child: None,
            };
            if server.spawn() {
                return Some(server);
            }
        }
        None
    }

    /// Starts the process and waits (polling its port, at most 10 s) until it answers PING.
    fn spawn(&mut self) -> bool {
        let port = self.port.to_string();
        let ports = match self.tls {
            true => vec!["--port", "0", "--tls-port", &port],
            false => vec!["--port", &port],
        };
        let Ok(child) = Command::new("redis-server")
            .args(ports)
            .args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        else {
            return false;
        };
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let exited = match self.child.as_mut() {
                Some(child) => child.try_wait().ok().flatten().is_some(),
                None => true,
            };
            if exited {
                self.child = None;
                return false;
            }
            if answers_ping(self.port, self.tls) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.stop();
        false
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (its data is lost: no persistence).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends `signal` (`STOP`, `CONT`) to the server: a stopped server accepts connections
    /// but never answers.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("a running server").id();
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{signal} {pid}");
    }

    /// Kills the server and starts a new, empty one on the same port.
    pub fn restart(&mut self) {
        self.stop();
        assert!(
            self.spawn(),
            "redis-server did not restart on port {}",
            self.port
        );
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether `redis-server --version` runs.
fn installed() -> bool {
    Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// Whether something on `port` answers an inline PING like Redis (`+PONG`, or `-NOAUTH` when
/// a password is required); for a TLS port, whether it accepts a connection.
fn answers_ping(port: u16, tls: bool) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    if tls {
        return true;
    }
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut reply = [0u8; 1];
    matches!(stream.read(&mut reply), Ok(1) if reply[0] == b'+' || reply[0] == b'-')
}
