//! The command line as users run it: the real binary, its output and exit codes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_workerpodautoscaler");

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("the binary runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn crd_subcommand_prints_the_committed_crd() {
    let output = run(&["crd"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let committed =
        std::fs::read_to_string(repo("artifacts/crd.yaml")).expect("artifacts/crd.yaml");
    assert_eq!(stdout(&output), committed);
}

#[test]
fn version_subcommand() {
    let output = run(&["version"]);
    assert!(output.status.success());
    assert_eq!(
        stdout(&output).trim(),
        format!("workerpodautoscaler {}", env!("CARGO_PKG_VERSION"))
    );
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write fixture");
    path
}

const WPA: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: worker
---
apiVersion: k8s.practo.dev/v1
kind: WorkerPodAutoScaler
metadata:
  name: sim
spec:
  minReplicas: 0
  maxReplicas: 10
  targetMessagesPerWorker: 10
  deploymentName: worker
  queueURI: redis://redis:6379/0/q
";

#[test]
fn simulate_prints_one_row_per_trace_row() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wpa = write(dir.path(), "wpa.yaml", WPA);
    // 0 -> 45 messages at zero replicas scales to ceil(45/10) = 5; messages drain while busy
    // (held by the 600 s delay); idle at t=700 with no scale since t=10: massive scale-down.
    let trace = write(
        dir.path(),
        "trace.csv",
        "t,messages,in_flight,idle\n0,0,0,0\n10,45,0,0\n20,45,5,0\n700,0,0,1\n",
    );
    let output = run(&[
        "simulate",
        "--wpa",
        wpa.to_str().unwrap(),
        "--trace",
        trace.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        stdout(&output),
        "t,messages,in_flight,current,desired,reason\n\
         0,0,0,0,0,NoChange\n\
         10,45,0,0,5,ScaleUpFromZero\n\
         20,45,5,5,5,WithinTolerance\n\
         700,0,0,5,0,ScaleDownIdle\n"
    );
}

#[test]
fn simulate_initial_replicas_and_delay_flags_change_decisions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wpa = write(dir.path(), "wpa.yaml", WPA);
    let trace = write(dir.path(), "trace.csv", "t,messages\n0,20\n30,0\n");
    let args = |delay: &str| {
        run(&[
            "simulate",
            "--wpa",
            wpa.to_str().unwrap(),
            "--trace",
            trace.to_str().unwrap(),
            "--initial-replicas",
            "8",
            "--scale-down-delay",
            delay,
        ])
    };
    // 20 messages at 8 replicas: desired 2 -> scale down (the first scale-down is not delayed);
    // then no backlog, not idle: partial scale-down to min, delayed 600 s after the last scale.
    let with_delay = stdout(&args("600"));
    assert!(
        with_delay.contains("0,20,0,8,2,ScaleDownBacklog"),
        "{with_delay}"
    );
    assert!(
        with_delay.contains("30,0,0,2,2,ScaleDownDelayed"),
        "{with_delay}"
    );
    let no_delay = stdout(&args("0"));
    assert!(no_delay.contains("30,0,0,2,0,ScaleDownToMin"), "{no_delay}");
}

#[test]
fn simulate_writes_output_and_plot_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out.csv");
    let svg = dir.path().join("plot.svg");
    let output = run(&[
        "simulate",
        "--wpa",
        repo("artifacts/examples/simulate/wpa.yaml")
            .to_str()
            .unwrap(),
        "--trace",
        repo("artifacts/examples/simulate/trace.csv")
            .to_str()
            .unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--plot",
        svg.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stdout(&output).is_empty(),
        "CSV goes to --output, not stdout"
    );
    let csv = std::fs::read_to_string(&out).expect("csv written");
    let trace_rows = std::fs::read_to_string(repo("artifacts/examples/simulate/trace.csv"))
        .expect("trace")
        .lines()
        .count();
    assert_eq!(
        csv.lines().count(),
        trace_rows,
        "one output row per trace row, plus the header"
    );
    assert!(
        csv.contains(",0,13,ScaleUpFromZero"),
        "the burst starts 13 workers:\n{csv}"
    );
    let picture = std::fs::read_to_string(&svg).expect("svg written");
    assert!(picture.contains("celery-default") && picture.contains("replicas (right)"));
}

#[test]
fn simulate_errors_name_line_and_column_and_write_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wpa = write(dir.path(), "wpa.yaml", WPA);
    let out = dir.path().join("out.csv");
    let svg = dir.path().join("plot.svg");
    let cases = [
        ("t,messages,colour\n0,1,red\n", "unknown column `colour`"),
        (
            "t,in_flight\n0,1\n",
            "required column `messages` is missing",
        ),
        (
            "t,messages\n0,1\n5,lots\n",
            "trace line 3, column `messages`",
        ),
        (
            "t,messages\n5,1\n4,1\n",
            "trace line 3, column `t`: time goes backwards",
        ),
    ];
    for (text, expected) in cases {
        let trace = write(dir.path(), "bad.csv", text);
        let output = run(&[
            "simulate",
            "--wpa",
            wpa.to_str().unwrap(),
            "--trace",
            trace.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
            "--plot",
            svg.to_str().unwrap(),
        ]);
        assert_eq!(output.status.code(), Some(1), "{text}");
        assert!(
            stderr(&output).contains(expected),
            "{text}: {}",
            stderr(&output)
        );
        assert!(
            !out.exists() && !svg.exists(),
            "no partial output for {text}"
        );
    }
}

/// Runs `simulate` on a manifest and a trace, expecting exit code 1 and `expected` on stderr.
fn assert_simulate_fails(wpa: &Path, trace: &Path, expected: &str) {
    let output = run(&[
        "simulate",
        "--wpa",
        wpa.to_str().unwrap(),
        "--trace",
        trace.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(
        stderr(&output).contains(expected),
        "want {expected:?}, got {}",
        stderr(&output)
    );
}

#[test]
fn simulate_rejects_bad_manifests_clearly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let trace = write(dir.path(), "trace.csv", "t,messages\n0,1\n");
    let no_wpa = write(
        dir.path(),
        "deploy.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: x\n",
    );
    assert_simulate_fails(&no_wpa, &trace, "no document of kind WorkerPodAutoScaler");
    let min_above_max = write(
        dir.path(),
        "bad.yaml",
        &WPA.replace("minReplicas: 0", "minReplicas: 11"),
    );
    assert_simulate_fails(&min_above_max, &trace, "invalid spec");
    assert_simulate_fails(
        Path::new("/nonexistent/wpa.yaml"),
        &trace,
        "cannot read /nonexistent/wpa.yaml",
    );
}

#[test]
fn inspect_exit_codes() {
    let output = run(&["inspect", "kafka://broker/topic"]);
    assert_eq!(
        output.status.code(),
        Some(1),
        "bad URI: {}",
        stderr(&output)
    );
    assert!(stderr(&output).contains("kafka"), "{}", stderr(&output));
    // Nothing listens on port 1 of loopback.
    let output = run(&["inspect", "redis://127.0.0.1:1/0/queue"]);
    assert_eq!(
        output.status.code(),
        Some(2),
        "unreachable: {}",
        stderr(&output)
    );
    assert!(stdout(&output).is_empty());
}

#[test]
fn inspect_prints_one_json_object_for_a_real_redis_list() {
    let queue = format!("cli-inspect-{}", std::process::id());
    let url = "redis://127.0.0.1:6379/4";
    let push = Command::new("redis-cli")
        .args(["-u", url, "rpush", &queue, "a", "b", "c"])
        .output()
        .expect("redis-cli runs");
    assert!(push.status.success());
    let output = run(&["inspect", &format!("redis://127.0.0.1:6379/4/{queue}")]);
    let _ = Command::new("redis-cli")
        .args(["-u", url, "del", &queue])
        .output();
    assert!(output.status.success(), "{}", stderr(&output));
    let line = stdout(&output);
    assert_eq!(line.lines().count(), 1, "{line}");
    let json: serde_json::Value = serde_json::from_str(line.trim()).expect("one JSON object");
    assert_eq!(json["provider"], "redis");
    assert_eq!(json["visible"], 3);
    assert_eq!(json["queue"], format!("redis://127.0.0.1:6379/4/{queue}"));
    for key in [
        "in_flight",
        "delayed",
        "sent_per_minute",
        "consumers",
        "idle",
        "sampled_at",
    ] {
        assert!(json.get(key).is_some(), "missing {key} in {line}");
    }
}
