//! Helpers for provider tests against real brokers: unique names, free ports, polling
//! for conditions, and private broker processes that a test may kill and restart.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rand::Rng;

/// `prefix` plus a random suffix, usable as a queue, tube or vhost name.
pub fn unique(prefix: &str) -> String {
    let suffix: u64 = rand::rng().random();
    format!("{prefix}-{suffix:016x}")
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local_addr").port()
}

/// Calls `check` until it yields `Some`, or panics after `timeout` naming `what`.
pub async fn eventually<T>(
    timeout: Duration,
    what: &str,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until something accepts connections on 127.0.0.1:`port`.
pub async fn wait_for_port(port: u16, timeout: Duration) {
    eventually(
        timeout,
        &format!("127.0.0.1:{port} to accept connections"),
        async || {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
                .map(|_| ())
        },
    )
    .await;
}

/// A broker process in its own process group; killed (whole group) on drop.
pub struct BrokerProcess {
    child: Option<Child>,
    command: Vec<String>,
    envs: Vec<(String, String)>,
    log: PathBuf,
}

impl BrokerProcess {
    /// Starts `program args...` with extra `envs`, output appended to `log`.
    pub fn start(program: &str, args: &[&str], envs: &[(&str, &str)], log: &Path) -> Self {
        let mut process = Self {
            child: None,
            command: std::iter::once(program)
                .chain(args.iter().copied())
                .map(String::from)
                .collect(),
            envs: envs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            log: log.to_path_buf(),
        };
        process.restart();
        process
    }

    /// Starts the process again with the same command (after [`Self::kill`]).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "process still running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open log");
        let child = Command::new(&self.command[0])
            .args(&self.command[1..])
            .envs(self.envs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.command[0]));
        self.child = Some(child);
    }

    /// SIGKILLs the whole process group and reaps the leader.
    #[allow(unsafe_code)]
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // The child leads its own group (process_group(0)), so its pid is the group
            // id. Guard against ever signalling group 0/1 (ourselves or everything).
            let pgid = libc::pid_t::try_from(child.id()).expect("pid fits pid_t");
            assert!(pgid > 1, "refusing to signal process group {pgid}");
            // SAFETY: kill(2) takes plain integers; a negative pid names one process group.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A private beanstalkd on a free port.
pub fn start_beanstalkd(dir: &Path) -> (BrokerProcess, u16) {
    let port = free_port();
    let port_s = port.to_string();
    let process = BrokerProcess::start(
        "beanstalkd",
        &["-l", "127.0.0.1", "-p", &port_s],
        &[],
        &dir.join("beanstalkd.log"),
    );
    (process, port)
}

/// A private moto_server (SQS-compatible) on a free port.
pub fn start_moto(dir: &Path) -> (BrokerProcess, u16) {
    let port = free_port();
    let port_s = port.to_string();
    let process = BrokerProcess::start(
        "moto_server",
        &["-H", "127.0.0.1", "-p", &port_s],
        &[],
        &dir.join("moto_server.log"),
    );
    (process, port)
}

/// A private RabbitMQ node (AMQP only, no plugins) on a free port, with its state under
/// `dir` so a restart keeps durable queues. Registers with the machine's epmd.
pub fn start_rabbitmq(dir: &Path) -> (BrokerProcess, u16) {
    let port = free_port();
    let dist_port = free_port();
    let conf = dir.join("rabbitmq.conf");
    std::fs::write(
        &conf,
        format!("listeners.tcp.local = 127.0.0.1:{port}\nloopback_users = none\n"),
    )
    .expect("write rabbitmq.conf");
    let env_file = dir.join("rabbitmq-env.conf");
    std::fs::write(&env_file, "").expect("write rabbitmq-env.conf");
    let plugins = dir.join("enabled_plugins");
    std::fs::write(&plugins, "[].\n").expect("write enabled_plugins");
    let s = |p: PathBuf| p.to_string_lossy().into_owned();
    let node = format!("wpatest{port}@localhost");
    let port_s = port.to_string();
    let dist_s = dist_port.to_string();
    let envs = [
        ("HOME", s(dir.to_path_buf())),
        ("RABBITMQ_NODENAME", node),
        ("RABBITMQ_NODE_PORT", port_s),
        ("RABBITMQ_DIST_PORT", dist_s),
        ("RABBITMQ_MNESIA_BASE", s(dir.join("mnesia"))),
        ("RABBITMQ_LOG_BASE", s(dir.join("log"))),
        ("RABBITMQ_CONFIG_FILE", s(conf)),
        ("RABBITMQ_CONF_ENV_FILE", s(env_file)),
        ("RABBITMQ_ENABLED_PLUGINS_FILE", s(plugins)),
        (
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS",
            "-kernel inet_dist_use_interface {127,0,0,1}".to_string(),
        ),
    ];
    let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let process = BrokerProcess::start(
        "/usr/lib/rabbitmq/bin/rabbitmq-server",
        &[],
        &envs,
        &dir.join("rabbitmq.out"),
    );
    (process, port)
}

/// A private redis-server on a free port of 127.0.0.1, with protected mode off: the shared
/// Redis refuses clients at loopback addresses other than 127.0.0.1 (protected mode), and
/// workers of Pods at their own loopback IPs ([`PodIps::Loopback`]) connect from those.
/// Nothing is persisted. Accepting connections when this returns.
///
/// [`PodIps::Loopback`]: super::apiserver::PodIps::Loopback
pub async fn start_redis(dir: &Path) -> (BrokerProcess, u16) {
    let port = free_port();
    let port_s = port.to_string();
    let dir_s = dir.to_string_lossy();
    let process = BrokerProcess::start(
        "redis-server",
        &[
            "--port",
            &port_s,
            "--bind",
            "127.0.0.1",
            "--protected-mode",
            "no",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            &dir_s,
        ],
        &[],
        &dir.join("redis-server.log"),
    );
    wait_for_port(port, Duration::from_secs(10)).await;
    (process, port)
}
