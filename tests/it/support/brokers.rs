//! Real brokers for the provider tests: the shared Redis at 127.0.0.1:6379 (override
//! with `WPA_TEST_REDIS_PORT`), private `redis-server` processes that tests may stop and
//! restart, and Celery/kombu scripts that write exactly what Celery writes.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

// One implementation of these for every test helper module.
#[allow(unused_imports)]
pub use super::broker_procs::{eventually, free_port, unique};

pub fn redis_port() -> u16 {
    std::env::var("WPA_TEST_REDIS_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(6379)
}

/// `redis://127.0.0.1:<port>/<db>` (a Celery broker URL).
pub fn redis_broker(port: u16, db: u8) -> String {
    format!("redis://127.0.0.1:{port}/{db}")
}

/// A synchronous connection for arranging test data.
pub fn redis_conn(port: u16, db: u8) -> redis::Connection {
    let client = redis::Client::open(redis_broker(port, db)).expect("redis client");
    client.get_connection().expect("connect to test redis")
}

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/celery")
        .join(name)
}

/// Enqueues `count` tasks through a real Celery producer (tests/celery/produce.py).
pub fn celery_produce(broker: &str, queue: &str, count: u32, extra: &[&str]) {
    celery_produce_ids(broker, queue, count, extra);
}

/// [`celery_produce`], returning the ids of the tasks sent.
pub fn celery_produce_ids(broker: &str, queue: &str, count: u32, extra: &[&str]) -> Vec<String> {
    celery_produce_timed(broker, queue, count, extra)
        .into_iter()
        .map(|(id, _)| id)
        .collect()
}

/// [`celery_produce`], returning each task's id and the Unix time (seconds) its send
/// returned.
pub fn celery_produce_timed(
    broker: &str,
    queue: &str,
    count: u32,
    extra: &[&str],
) -> Vec<(String, f64)> {
    let out = Command::new("python3")
        .arg(script("produce.py"))
        .args([
            "--broker",
            broker,
            "--queue",
            queue,
            "--count",
            &count.to_string(),
        ])
        .args(extra)
        .output()
        .expect("run produce.py");
    assert!(
        out.status.success(),
        "produce.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reply: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("produce.py prints JSON");
    assert_eq!(reply["sent"], count, "produce.py said {reply}");
    let ids = reply["ids"]
        .as_array()
        .expect("produce.py lists the task ids");
    let sent_at = reply["sent_at"]
        .as_array()
        .expect("produce.py lists the send times");
    assert_eq!(ids.len(), sent_at.len(), "produce.py said {reply}");
    ids.iter()
        .zip(sent_at)
        .filter_map(|(id, at)| Some((id.as_str()?.to_string(), at.as_f64()?)))
        .collect()
}

/// A kombu consumer holding messages unacknowledged (tests/celery/reserve.py).
pub struct Reserver {
    child: Child,
    stdin: Option<ChildStdin>,
    pub held: u32,
}

impl Reserver {
    pub fn start(broker: &str, queue: &str, count: u32, extra: &[&str]) -> Reserver {
        let mut child = Command::new("python3")
            .arg(script("reserve.py"))
            .args([
                "--broker",
                broker,
                "--queue",
                queue,
                "--count",
                &count.to_string(),
            ])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run reserve.py");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("reserve.py stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read reserve.py output");
        let value: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("reserve.py said {line:?}: {e}"));
        let held = value["held"].as_u64().expect("held count") as u32;
        Reserver { child, stdin, held }
    }

    /// Closes the consumer's connection the way a worker shutting down does: kombu puts
    /// the held messages back on their queue.
    pub fn release(mut self) {
        drop(self.stdin.take());
        let status = self.child.wait().expect("wait for reserve.py");
        assert!(status.success(), "reserve.py exited with {status}");
    }
}

impl Drop for Reserver {
    fn drop(&mut self) {
        if self.stdin.is_some() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A private `redis-server` on its own port, without persistence, that a test may stop
/// and restart on the same port.
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    args: Vec<String>,
}

impl RedisServer {
    /// A plain-TCP server; `extra` are more `redis-server` arguments.
    pub fn start(extra: &[&str]) -> RedisServer {
        let port = free_port();
        let mut args = vec!["--port".to_string(), port.to_string()];
        args.extend(extra.iter().map(|s| s.to_string()));
        Self::spawn(port, args)
    }

    /// A TLS-only server presenting `cert`/`key` (clients are not asked for certificates).
    pub fn start_tls(cert: &Path, key: &Path, ca: &Path) -> RedisServer {
        let port = free_port();
        let path = |p: &Path| p.to_string_lossy().into_owned();
        let args = vec![
            "--port".to_string(),
            "0".to_string(),
            "--tls-port".to_string(),
            port.to_string(),
            "--tls-cert-file".to_string(),
            path(cert),
            "--tls-key-file".to_string(),
            path(key),
            "--tls-ca-cert-file".to_string(),
            path(ca),
            "--tls-auth-clients".to_string(),
            "no".to_string(),
        ];
        Self::spawn(port, args)
    }

    fn spawn(port: u16, args: Vec<String>) -> RedisServer {
        let mut server = RedisServer {
            port,
            child: None,
            args,
        };
        server.restart();
        server
    }

    /// Starts the server again (same port, empty data) and waits until it answers.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "server already running");
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--daemonize", "no"])
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the server and waits until its port refuses connections.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Writes a test CA and a server certificate for `localhost`/127.0.0.1 into `dir` with
/// the `openssl` CLI; returns (ca.crt, server.crt, server.key).
pub fn make_certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("run openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=wpa-test-ca",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .expect("write ext.cnf");
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
    (
        dir.join("ca.crt"),
        dir.join("server.crt"),
        dir.join("server.key"),
    )
}

/// A real Celery worker (tests/celery/worker_app.py: acks_late, prefetch multiplier 1)
/// consuming `queue` with `concurrency` thread slots. Killed on drop.
pub struct CeleryWorker {
    child: Child,
}

impl CeleryWorker {
    /// A worker that sends no events (`--without-heartbeat`), named `<queue>@localhost`.
    pub fn start(broker: &str, queue: &str, concurrency: u32, task_seconds: f64) -> CeleryWorker {
        let mut command = Self::command(broker, queue, concurrency);
        command
            .arg("--without-heartbeat")
            .args(["--hostname", &format!("{queue}@localhost")])
            .env("WPA_TEST_TASK_SECONDS", task_seconds.to_string());
        Self::spawn(command)
    }

    /// A worker that sends worker events (online, heartbeats every 2 s, offline), started
    /// as Tutor starts its workers (`--without-gossip --without-mingle`), with
    /// `--hostname hostname` and kombu's Redis `global_keyprefix` set to `keyprefix`.
    pub fn with_events(
        broker: &str,
        queue: &str,
        hostname: &str,
        keyprefix: Option<&str>,
    ) -> CeleryWorker {
        let mut command = Self::command(broker, queue, 2);
        command.args(["--hostname", hostname]);
        if let Some(prefix) = keyprefix {
            command.env("WPA_TEST_KEYPREFIX", prefix);
        }
        Self::spawn(command)
    }

    fn command(broker: &str, queue: &str, concurrency: u32) -> Command {
        let mut command = Command::new("python3");
        command
            .args(["-m", "celery", "-A", "worker_app", "worker", "-Q", queue])
            .args([
                "--pool",
                "threads",
                "--concurrency",
                &concurrency.to_string(),
            ])
            .args(["--without-gossip", "--without-mingle"])
            .args(["--loglevel", "WARNING"])
            .current_dir(script(""))
            .env("WPA_TEST_BROKER", broker)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        command
    }

    fn spawn(mut command: Command) -> CeleryWorker {
        let child = command.spawn().expect("start a celery worker");
        CeleryWorker { child }
    }

    /// Asks for a warm shutdown as Kubernetes does (SIGTERM).
    #[allow(unsafe_code)]
    pub fn sigterm(&self) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid fits pid_t");
        assert!(pid > 1, "refusing to signal pid {pid}");
        // SAFETY: kill(2) takes plain integers; a positive pid names one process.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }

    /// Whether the worker process has exited (without blocking).
    pub fn exited(&mut self) -> bool {
        self.child
            .try_wait()
            .expect("wait for the worker")
            .is_some()
    }
}

impl Drop for CeleryWorker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
