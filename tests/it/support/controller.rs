//! Runs the real `workerpodautoscaler run` binary against the API server double.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use serde_json::{Value, json};

use super::apiserver::{ApiServerDouble, Gvr};

const BIN: &str = env!("CARGO_BIN_EXE_workerpodautoscaler");

/// A controller process; killed when dropped.
pub struct ControllerProcess {
    child: Child,
    pub metrics_addr: SocketAddr,
    pub log: PathBuf,
}

impl ControllerProcess {
    /// Starts the controller with a kubeconfig for `server` and fast test settings; `extra`
    /// flags come last and override them.
    pub fn start(server: &ApiServerDouble, dir: &Path, name: &str, extra: &[&str]) -> Self {
        Self::start_with_env(server, dir, name, extra, &[])
    }

    /// As [`Self::start`], with extra environment variables for the process (e.g. AWS
    /// credentials for the SDK's default chain).
    pub fn start_with_env(
        server: &ApiServerDouble,
        dir: &Path,
        name: &str,
        extra: &[&str],
        envs: &[(&str, &str)],
    ) -> Self {
        let kubeconfig = dir.join(format!("{name}.kubeconfig"));
        server
            .write_kubeconfig(&kubeconfig)
            .expect("kubeconfig written");
        let port = super::broker_procs::free_port();
        let metrics_addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        let log = dir.join(format!("{name}.log"));
        let log_file = std::fs::File::create(&log).expect("log file");
        let mut args: Vec<String> = vec![
            "run".into(),
            format!("--kube-config={}", kubeconfig.display()),
            format!("--metrics-port={metrics_addr}"),
            "--resync-period=30".into(),
            "--idle-window=2".into(),
            "--scale-down-delay-after-last-scale-activity=2".into(),
            "--log-level=info,wpa=debug".into(),
        ];
        // A flag given in `extra` replaces the default above (clap refuses repeats).
        let flag_name = |arg: &str| arg.split('=').next().unwrap_or(arg).to_string();
        let overridden: Vec<String> = extra.iter().map(|a| flag_name(a)).collect();
        args.retain(|a| !overridden.contains(&flag_name(a)));
        args.extend(extra.iter().map(|s| s.to_string()));
        // WPA_CONTROLLER_WRAPPER="heaptrack -o /tmp/wpa" runs the controller under a
        // profiler (pid-based figures then describe the wrapper, not the controller).
        let wrapper = std::env::var("WPA_CONTROLLER_WRAPPER").unwrap_or_default();
        let mut command_line: Vec<String> =
            wrapper.split_whitespace().map(str::to_string).collect();
        // nextest names the binary of its own build (e.g. one extracted from an archive);
        // the compile-time path may since hold another build.
        command_line
            .push(std::env::var("NEXTEST_BIN_EXE_workerpodautoscaler").unwrap_or(BIN.into()));
        let child = Command::new(&command_line[0])
            .args(&command_line[1..])
            .args(&args)
            .env_remove("RUST_LOG")
            .env_remove("KUBECONFIG")
            .env("POD_NAME", name)
            .envs(envs.iter().copied())
            // The controller logs to stdout (tracing's default); panics go to stderr.
            .stdout(log_file.try_clone().expect("clone log file"))
            .stderr(log_file)
            .spawn()
            .expect("controller starts");
        ControllerProcess {
            child,
            metrics_addr,
            log,
        }
    }

    /// The controller's /metrics text, or an empty string while it is not serving yet.
    pub async fn metrics(&self) -> String {
        let url = format!("http://{}/metrics", self.metrics_addr);
        match reqwest::get(url).await {
            Ok(response) => response.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// HTTP status of /readyz (0 when not serving).
    pub async fn readyz(&self) -> u16 {
        match reqwest::get(format!("http://{}/readyz", self.metrics_addr)).await {
            Ok(response) => response.status().as_u16(),
            Err(_) => 0,
        }
    }

    /// The log so far; lossy, so that one stray byte does not hide the whole log.
    pub fn log_text(&self) -> String {
        std::fs::read(&self.log)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }

    /// SIGKILL: the process gets no chance to release anything.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for exit; returns the exit status code.
    #[allow(unsafe_code)]
    pub fn terminate(&mut self) -> Option<i32> {
        let pid = i32::try_from(self.child.id()).expect("pid fits");
        // SAFETY: kill(2) on our own child's pid; no memory is shared.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        for _ in 0..100 {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.kill();
        None
    }

    /// The process id (benchmarks read its CPU time and memory from /proc).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn has_exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }
}

impl Drop for ControllerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A WorkerPodAutoScaler object with this spec.
pub fn wpa(namespace: &str, name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "k8s.practo.dev/v1",
        "kind": "WorkerPodAutoScaler",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    })
}

/// The stored WPA's status (Null when absent).
pub fn wpa_status(server: &ApiServerDouble, namespace: &str, name: &str) -> Value {
    server
        .get(&Gvr::WORKER_POD_AUTOSCALERS, Some(namespace), name)
        .map(|w| w["status"].clone())
        .unwrap_or(Value::Null)
}

/// The condition of this type in a status, if any.
pub fn condition(status: &Value, type_: &str) -> Option<Value> {
    status["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .cloned()
}

/// Reasons of the events recorded about an object (events.k8s.io and core).
pub fn event_reasons(server: &ApiServerDouble, namespace: &str, name: &str) -> Vec<String> {
    let mut reasons = Vec::new();
    for gvr in [Gvr::EVENTS, Gvr::CORE_EVENTS] {
        for event in server.list(&gvr, Some(namespace)) {
            let regarding = if event["regarding"].is_object() {
                &event["regarding"]
            } else {
                &event["involvedObject"]
            };
            if regarding["name"] == name
                && let Some(reason) = event["reason"].as_str()
            {
                reasons.push(reason.to_string());
            }
        }
    }
    reasons
}

/// The value of a metric line starting with `prefix` (e.g. `wpa_queue_poll_loops`).
pub fn metric_value(metrics: &str, prefix: &str) -> Option<f64> {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}
