//! `simulate compare` and `simulate generate`: the cluster engine's invariants, the
//! policies against hand-worked expectations, the bound against the simulated policies, the
//! shipped traces and the command line.

use std::path::{Path, PathBuf};
use std::process::Command;

use wpa::simulate::arrivals::{Task, read_arrivals};
use wpa::simulate::bound::{BoundParams, lower_bound};
use wpa::simulate::cluster::{Ack, ClusterConfig, RunResult, run};
use wpa::simulate::compare::{CompareOptions, compare};
use wpa::simulate::context::PolicyContext;
use wpa::simulate::keda::Keda;
use wpa::simulate::load_wpa;
use wpa::simulate::policies::Choice;
use wpa::simulate::practo::Practo;
use wpa::simulate::view::{ClusterView, SimPolicy};

const BIN: &str = env!("CARGO_BIN_EXE_workerpodautoscaler");

const WPA: &str = "apiVersion: k8s.practo.dev/v1
kind: WorkerPodAutoScaler
metadata: {name: workers}
spec:
  minReplicas: 0
  maxReplicas: 20
  targetMessagesPerWorker: 5
  deploymentName: worker
  queueURI: redis://redis:6379/0/q
";

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn task(arrival: f64, duration: f64) -> Task {
    Task { arrival, duration }
}

/// Sets replicas from a script of (from time, replicas), and records what it saw.
struct Script {
    steps: Vec<(f64, i32)>,
    seen: Vec<(f64, u64, u64)>,
}

impl Script {
    fn new(steps: &[(f64, i32)]) -> Self {
        Script {
            steps: steps.to_vec(),
            seen: Vec::new(),
        }
    }
}

impl SimPolicy for Script {
    fn name(&self) -> &str {
        "script"
    }
    fn period(&self) -> f64 {
        1.0
    }
    fn decide(&mut self, view: &ClusterView<'_>) -> i32 {
        self.seen
            .push((view.now, view.queue.visible, view.queue.in_flight));
        self.steps
            .iter()
            .rev()
            .find(|(at, _)| view.now >= *at)
            .map_or(0, |s| s.1)
    }
}

fn config(ack: Ack, prefetch: u32, concurrency: u32) -> ClusterConfig {
    ClusterConfig {
        ack,
        prefetch,
        concurrency,
        horizon: 600.0,
        ..ClusterConfig::default()
    }
}

/// Invariants that hold for every run: each task starts once, after it arrived, on a pod
/// that was ready and not yet removed, with at most `concurrency` tasks at once per pod.
fn check_invariants(result: &RunResult, concurrency: u32) {
    for (i, t) in result.tasks.iter().enumerate() {
        let start = t.start.unwrap_or_else(|| panic!("task {i} never started"));
        assert!(start >= t.arrival, "task {i} started before it arrived");
        let pod = &result.pods[t.pod.expect("pod") as usize];
        assert!(
            pod.ready_at.is_some_and(|r| r <= start),
            "task {i} on a pod not ready"
        );
        assert!(
            pod.removed_at.is_none_or(|r| start <= r),
            "task {i} started on a removed pod"
        );
        assert!(
            start + t.duration <= pod.exited_at + 1e-9,
            "pod {} exited mid-task",
            pod.id
        );
    }
    for pod in &result.pods {
        let mut edges: Vec<(f64, i32)> = result
            .tasks
            .iter()
            .filter(|t| t.pod == Some(pod.id))
            .flat_map(|t| {
                let s = t.start.expect("started");
                [(s, 1), (s + t.duration, -1)]
            })
            .collect();
        edges.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let mut running = 0;
        for (_, change) in edges {
            running += change;
            assert!(
                running <= concurrency as i32,
                "pod {} ran {running} tasks at once",
                pod.id
            );
        }
    }
    let paid: f64 = result.pods.iter().map(|p| p.exited_at - p.created).sum();
    assert!((result.worker_seconds() - paid).abs() < 1e-9);
}

#[test]
fn tasks_start_once_in_arrival_order_on_ready_pods() {
    let tasks: Vec<Task> = (0..40)
        .map(|i| task(f64::from(i) * 0.7, 2.0 + f64::from(i % 5)))
        .collect();
    for concurrency in [1, 3] {
        let mut policy = Script::new(&[(0.0, 2), (8.0, 4), (25.0, 1)]);
        let result = run(&tasks, &config(Ack::Late, 1, concurrency), &mut policy).expect("runs");
        check_invariants(&result, concurrency);
        // FIFO: without prefetch reservations a later task never starts before an earlier one.
        let starts: Vec<f64> = result
            .tasks
            .iter()
            .map(|t| t.start.expect("started"))
            .collect();
        assert!(starts.windows(2).all(|w| w[0] <= w[1]), "{starts:?}");
    }
}

#[test]
fn worker_seconds_count_startup_and_warm_shutdown() {
    // Two pods from 0 (ready at 10). A 100 s task at 0 and a 5 s task at 1 start at 10. At
    // 20 the script scales to 0: the idle pod exits at once (20 s paid), the busy one
    // finishes its task at 110 (110 s paid).
    let tasks = [task(0.0, 100.0), task(1.0, 5.0)];
    let mut policy = Script::new(&[(0.0, 2), (20.0, 0)]);
    let result = run(&tasks, &config(Ack::Late, 1, 1), &mut policy).expect("runs");
    check_invariants(&result, 1);
    let exits: Vec<(f64, Option<f64>, f64)> = result
        .pods
        .iter()
        .map(|p| (p.created, p.removed_at, p.exited_at))
        .collect();
    assert_eq!(
        exits,
        vec![(0.0, Some(20.0), 110.0), (0.0, Some(20.0), 20.0)]
    );
    assert_eq!(result.worker_seconds(), 130.0);
    assert_eq!(result.end, 110.0);
    assert_eq!(result.scale_actions, 2);
}

#[test]
fn early_ack_prefetch_holds_tasks_that_new_pods_cannot_take() {
    // Issue 21 point 6: two busy early-ack workers with prefetch 4 hold 8 queued tasks; two
    // pods added at 20 find the queue empty and idle while those tasks wait.
    let tasks: Vec<Task> = (0..10).map(|_| task(0.0, 30.0)).collect();
    let steps = [(0.0, 2), (20.0, 4)];
    let mut early = Script::new(&steps);
    let held = run(&tasks, &config(Ack::Early, 4, 1), &mut early).expect("runs");
    check_invariants(&held, 1);
    // What the controller saw at 15 s: nothing visible, 8 unacknowledged.
    assert!(
        early.seen.contains(&(15.0, 0, 8)),
        "{:?}",
        &early.seen[10..20]
    );
    let new_pods_work: u64 = held.pods[2..].iter().map(|p| p.processed).sum();
    assert_eq!(new_pods_work, 0, "new pods took prefetched tasks");
    let worst = held
        .tasks
        .iter()
        .filter_map(|t| t.wait())
        .fold(0.0, f64::max);
    assert_eq!(worst, 130.0); // the fifth task of a worker starts after four 30 s tasks
    // The same with late ack and prefetch 1: the new pods take the waiting tasks at 30.
    let mut late = Script::new(&steps);
    let fair = run(&tasks, &config(Ack::Late, 1, 1), &mut late).expect("runs");
    check_invariants(&fair, 1);
    assert!(
        late.seen.contains(&(15.0, 8, 2)),
        "{:?}",
        &late.seen[10..20]
    );
    let worst = fair
        .tasks
        .iter()
        .filter_map(|t| t.wait())
        .fold(0.0, f64::max);
    assert_eq!(worst, 70.0);
}

fn context<'a>(
    wpa: &'a wpa::crd::WorkerPodAutoScaler,
    cluster: &'a ClusterConfig,
    delay: u64,
) -> PolicyContext<'a> {
    PolicyContext {
        cluster,
        wpa,
        settings: wpa::scaler::ScalerSettings {
            scale_down_delay: std::time::Duration::from_secs(delay),
            ..wpa::scaler::ScalerSettings::default()
        },
        idle_window: 20.0,
        poll: 1.0,
        heartbeats: true,
        max_wait: 30.0,
    }
}

#[test]
fn practo_policy_decides_as_the_engine_with_its_own_target() {
    let wpa = load_wpa(WPA).expect("wpa");
    let cluster = ClusterConfig::default();
    // 23 tasks at once: practo:5 wants ceil(23 / 5) = 5 from zero, practo:2 wants 12.
    let tasks: Vec<Task> = (0..23).map(|_| task(0.0, 40.0)).collect();
    for (target, first) in [(5, 5), (2, 12)] {
        let mut policy = Practo::new(target, &context(&wpa, &cluster, 30)).expect("policy");
        let result = run(&tasks, &cluster, &mut policy).expect("runs");
        check_invariants(&result, 1);
        assert_eq!(result.replicas[1], (0.0, first), "practo:{target}");
        // Later steps follow the backlog (23 in flight or waiting until the first tasks end
        // at 50): no scale-down while they run, and the pool ends at zero.
        let before_first_end: Vec<i32> = result
            .replicas
            .iter()
            .filter(|(t, _)| *t < 50.0)
            .map(|r| r.1)
            .collect();
        assert!(
            before_first_end.windows(2).all(|w| w[0] <= w[1]),
            "{:?}",
            result.replicas
        );
        assert_eq!(result.replicas.last().map(|r| r.1), Some(0));
    }
    // The 600 s default delay holds the pool after its last scale.
    let mut held = Practo::new(5, &context(&wpa, &cluster, 600)).expect("policy");
    let result = run(&tasks, &cluster, &mut held).expect("runs");
    let ups: Vec<f64> = result
        .replicas
        .windows(2)
        .filter(|w| w[1].1 > w[0].1)
        .map(|w| w[1].0)
        .collect();
    let first_down = result
        .replicas
        .windows(2)
        .find(|w| w[1].1 < w[0].1)
        .map(|w| w[1].0);
    let last_up = ups.iter().copied().fold(0.0, f64::max);
    assert!(
        first_down.is_some_and(|d| d > last_up + 600.0),
        "{:?}",
        result.replicas
    );
}

/// Wraps a policy and records what it was shown and what it answered.
struct Recorder<P> {
    inner: P,
    idle_window: f64,
    log: Vec<(f64, wpa::scaler::QueueSnapshot, i32, i32)>,
}

impl<P: SimPolicy> SimPolicy for Recorder<P> {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn period(&self) -> f64 {
        self.inner.period()
    }
    fn decide(&mut self, view: &ClusterView<'_>) -> i32 {
        let desired = self.inner.decide(view);
        let seen = Practo::snapshot(view, self.idle_window);
        self.log.push((view.now, seen, view.replicas, desired));
        desired
    }
}

#[test]
fn practo_without_heartbeats_matches_the_queue_trace_replay() {
    // The queue figures the policy saw, replayed through `simulate --trace`'s engine, give
    // the same decisions: the policy adds nothing of its own to practo's rule.
    let wpa = load_wpa(&WPA.replace("minReplicas: 0", "minReplicas: 0\n  maxDisruption: \"50%\""))
        .expect("wpa");
    let cluster = ClusterConfig {
        heartbeat: None,
        ..ClusterConfig::default()
    };
    let mut ctx = context(&wpa, &cluster, 45);
    ctx.heartbeats = false;
    let tasks = long_tail();
    let mut recorder = Recorder {
        inner: Practo::new(3, &ctx).expect("policy"),
        idle_window: ctx.idle_window,
        log: Vec::new(),
    };
    run(&tasks, &cluster, &mut recorder).expect("runs");
    let rows: Vec<wpa::simulate::trace::TraceRow> = recorder
        .log
        .iter()
        .map(|(t, q, _, _)| wpa::simulate::trace::TraceRow {
            t: *t,
            messages: q.visible,
            in_flight: q.in_flight,
            sent_per_minute: 0.0,
            idle: q.idle,
            busy: None,
        })
        .collect();
    let mut spec = wpa.clone();
    spec.spec.target_messages_per_worker = 3;
    let options = wpa::simulate::SimulateOptions {
        initial_replicas: Some(0),
        scale_down_delay: std::time::Duration::from_secs(45),
        ..wpa::simulate::SimulateOptions::default()
    };
    let replay = wpa::simulate::simulate(&spec, &rows, &options).expect("replays");
    assert_eq!(replay.len(), recorder.log.len());
    let changes = recorder
        .log
        .iter()
        .filter(|(_, _, current, desired)| current != desired)
        .count();
    assert!(
        changes > 5,
        "a run with few decisions proves little: {changes}"
    );
    for (step, (t, _, current, desired)) in replay.iter().zip(&recorder.log) {
        assert_eq!(
            (step.current, step.desired),
            (*current, *desired),
            "at {t} s"
        );
    }
}

#[test]
fn keda_syncs_every_15_s_activates_at_its_poll_and_holds_300_s() {
    let wpa = load_wpa(WPA).expect("wpa");
    let cluster = ClusterConfig::default();
    // 60 tasks of 5 s at t = 1: KEDA's poll at 0 saw nothing, the one at 30 activates.
    let tasks: Vec<Task> = (0..60).map(|_| task(1.0, 5.0)).collect();
    let mut policy = Keda::new(5, &context(&wpa, &cluster, 600)).expect("policy");
    let result = run(&tasks, &cluster, &mut policy).expect("runs");
    check_invariants(&result, 1);
    let changes = &result.replicas[1..];
    assert!(changes.iter().all(|(t, _)| t % 15.0 == 0.0), "{changes:?}");
    // 1 at 30; at 45 the HPA wants ceil(59 / 5) = 12 but may add 4 pods (or 100%) per 15 s.
    assert_eq!(&changes[..2], &[(30.0, 1), (45.0, 5)]);
    let last_up = result
        .replicas
        .windows(2)
        .filter(|w| w[1].1 > w[0].1)
        .map(|w| w[1].0)
        .fold(0.0, f64::max);
    let first_down = result
        .replicas
        .windows(2)
        .find(|w| w[1].1 < w[0].1)
        .map(|w| w[1].0)
        .expect("scales down");
    // Scale-down stabilization: the highest recommendation of the last 300 s holds.
    assert!(first_down >= last_up + 300.0, "{:?}", result.replicas);
    // Scale to zero happens at a KEDA poll (every 30 s), 300 s after the list was last seen
    // non-empty.
    let zero = result.replicas.last().expect("changes");
    assert_eq!(zero.1, 0);
    assert_eq!(zero.0 % 30.0, 0.0);
}

fn long_tail() -> Vec<Task> {
    let file = std::fs::File::open(repo("artifacts/examples/simulate/traces/long-tail.csv"))
        .expect("trace");
    read_arrivals(file).expect("parses")
}

#[test]
fn the_bound_is_below_every_policy_that_meets_the_target() {
    let wpa = load_wpa(WPA).expect("wpa");
    let tasks = long_tail();
    let options = CompareOptions {
        cluster: ClusterConfig::default(),
        max_wait: 30.0,
        settings: context(&wpa, &ClusterConfig::default(), 30).settings,
        idle_window: 20.0,
    };
    let choices = Choice::parse_list("practo:2,practo:5,keda:5,practo:10,bound").expect("choices");
    let comparison = compare(&wpa, &tasks, &choices, &options).expect("compares");
    let bound = comparison.bound.as_ref().expect("bound");
    assert!(bound.lb0 <= bound.lower && bound.lp <= bound.lower);
    assert!(bound.lower <= bound.schedule.worker_seconds + 1e-6);
    for row in comparison.rows.iter().filter(|r| r.over == Some(0)) {
        assert!(
            row.worker_seconds >= bound.lower,
            "{} below the bound: {row:?}",
            row.policy
        );
    }
    // The offline schedule meets the target.
    assert!(bound.schedule.waits.iter().all(|&w| w <= 30.0 + 1e-9));
    // Each simulated run is deterministic.
    let policies_only = &choices[..choices.len() - 1];
    let first = compare(&wpa, &tasks, policies_only, &options).expect("compares");
    let again = compare(&wpa, &tasks, policies_only, &options).expect("compares");
    assert_eq!(again.rows, first.rows);
    // The bound with maxReplicas 20 is the same as without here (never more than 20 needed).
    let free = lower_bound(
        &tasks,
        &BoundParams {
            max_pods: None,
            max_wait: 30.0,
            startup: 10.0,
            concurrency: 1,
            initial: 0,
        },
    )
    .expect("bound");
    assert!((free.lower - bound.lower).abs() < 1e-6);
}

#[test]
fn shipped_traces_parse_and_regenerate_from_their_header() {
    for name in [
        "steady",
        "diurnal",
        "bursts",
        "long-tail",
        "burst-then-sparse",
    ] {
        let path = repo(&format!("artifacts/examples/simulate/traces/{name}.csv"));
        let text = std::fs::read_to_string(&path).expect("trace");
        let tasks = read_arrivals(text.as_bytes()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(tasks.len() >= 90, "{name}");
        let command = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# workerpodautoscaler "))
            .expect("header");
        let output = Command::new(BIN)
            .args(command.split(' '))
            .output()
            .expect("runs");
        assert!(
            output.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(
            String::from_utf8(output.stdout).expect("utf-8"),
            text,
            "{name} differs from its command's output"
        );
    }
    assert_eq!(long_tail().len(), 203);
}

#[test]
fn the_docs_show_what_compare_prints() {
    // docs/simulate.md's example tables are this command's output, row for row: a change to
    // the engine, a policy or the bound that moves a figure must update the docs too.
    let wpa = repo("artifacts/examples/simulate/traces/wpa.yaml");
    let docs = std::fs::read_to_string(repo("docs/simulate.md")).expect("docs");
    let bench = ["--scale-down-delay", "30", "--idle-window", "20"];
    let all = "practo:2,practo:5,practo:8,practo:10,keda:5,bound";
    let early = [&bench[..], &["--ack", "early", "--prefetch", "4"]].concat();
    let runs = [
        ("long-tail", all, &[][..]),
        ("long-tail", all, &bench[..]),
        ("long-tail", "practo:1..12,bound", &bench[..]),
        ("burst-then-sparse", "practo:5,bound", &early[..]),
        ("burst-then-sparse", "practo:5,bound", &bench[..]),
    ];
    for (trace, policies, flags) in runs {
        let arrivals = repo(&format!("artifacts/examples/simulate/traces/{trace}.csv"));
        let mut args = vec![
            "simulate",
            "compare",
            "--wpa",
            wpa.to_str().unwrap(),
            "--arrivals",
            arrivals.to_str().unwrap(),
            "--startup",
            "10",
            "--max-wait",
            "30",
            "--policies",
            policies,
        ];
        args.extend_from_slice(flags);
        let output = cli(&args);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let table = String::from_utf8(output.stdout).expect("utf-8");
        for row in table.lines().filter(|l| l.starts_with("| ")) {
            assert!(
                docs.contains(row),
                "docs/simulate.md lacks `{row}` ({flags:?})"
            );
        }
    }
}

fn cli(args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(args).output().expect("binary runs")
}

#[test]
fn compare_writes_the_table_and_the_plot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let table = dir.path().join("table.md");
    let svg = dir.path().join("compare.svg");
    let per_task = dir.path().join("tasks.csv");
    let wpa = repo("artifacts/examples/simulate/traces/wpa.yaml");
    let arrivals = repo("artifacts/examples/simulate/traces/long-tail.csv");
    let output = cli(&[
        "simulate",
        "compare",
        "--wpa",
        wpa.to_str().unwrap(),
        "--arrivals",
        arrivals.to_str().unwrap(),
        "--startup",
        "10",
        "--max-wait",
        "30",
        "--policies",
        "practo:5,keda:5",
        "--output",
        table.to_str().unwrap(),
        "--plot",
        svg.to_str().unwrap(),
        "--tasks",
        per_task.to_str().unwrap(),
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = std::fs::read_to_string(&table).expect("table");
    assert!(
        text.contains("| policy | wait p50 | wait p95 | wait max | tasks over 30 s |"),
        "{text}"
    );
    assert!(
        text.contains("| practo:5 |") && text.contains("| keda:5 |"),
        "{text}"
    );
    let rows = std::fs::read_to_string(&per_task).expect("tasks");
    let mut lines = rows.lines();
    assert_eq!(
        lines.next(),
        Some("policy,task,arrival,duration,start,wait,pod")
    );
    // One row per task and policy, and the waits are start - arrival.
    assert_eq!(lines.clone().count(), 2 * 203);
    for line in lines {
        let f: Vec<&str> = line.split(',').collect();
        let (arrival, start, wait): (f64, f64, f64) = (
            f[2].parse().unwrap(),
            f[4].parse().unwrap(),
            f[5].parse().unwrap(),
        );
        assert!((start - arrival - wait).abs() < 0.002, "{line}");
    }
    let picture = std::fs::read_to_string(&svg).expect("svg");
    for label in ["practo:5", "keda:5", "target wait W = 30 s", "replicas"] {
        assert!(picture.contains(label), "no `{label}` in the SVG");
    }
}

/// Runs the binary expecting exit code 1 and `expected` on stderr.
fn assert_fails(args: &[&str], expected: &str) {
    let output = cli(args);
    assert_eq!(output.status.code(), Some(1), "{args:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(expected), "{args:?}: {stderr}");
}

#[test]
fn command_line_errors_are_clear() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, "# a comment\narrival,duration\n0,2\n5,x\n").expect("write");
    let wpa = repo("artifacts/examples/simulate/traces/wpa.yaml");
    let wpa = wpa.to_str().unwrap();
    let compare = |arrivals: &Path, extra: &[&str], expected: &str| {
        let mut args = vec![
            "simulate",
            "compare",
            "--wpa",
            wpa,
            "--arrivals",
            arrivals.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        assert_fails(&args, expected);
    };
    compare(
        &bad,
        &[],
        "bad.csv: arrivals line 4, column `duration`: expected seconds > 0, got `x`",
    );
    let good = repo("artifacts/examples/simulate/traces/long-tail.csv");
    compare(
        &good,
        &["--policies", "practo:5,hpa:3"],
        "`hpa:3`: unknown policy",
    );
    compare(
        &good,
        &["--ack", "sometimes"],
        "--ack: expected `early` or `late`, got `sometimes`",
    );
    compare(
        &good,
        &["--concurrency", "0"],
        "--concurrency must be >= 1, got 0",
    );
    compare(
        Path::new("/nonexistent/a.csv"),
        &[],
        "cannot read /nonexistent/a.csv",
    );
    assert_fails(
        &[
            "simulate",
            "generate",
            "--phases",
            "1:60,fast:10",
            "--durations",
            "2..8",
            "--seed",
            "1",
        ],
        "--phases: `fast:10`: a rate must be a number >= 0",
    );
    assert_fails(
        &[
            "simulate",
            "generate",
            "--phases",
            "1:60",
            "--durations",
            "8..2",
            "--seed",
            "1",
        ],
        "--durations: `8..2`: MAX is below MIN",
    );
}

mod properties {
    //! The engine's invariants on random traces, cluster settings and replica scripts.

    use super::*;
    use proptest::prelude::*;
    use proptest::test_runner::Config;

    fn traces() -> impl Strategy<Value = Vec<Task>> {
        prop::collection::vec((0u32..2000, 1u32..400), 1..40).prop_map(|raw| {
            let mut tasks: Vec<Task> = raw
                .into_iter()
                .map(|(a, d)| task(f64::from(a) / 10.0, f64::from(d) / 10.0))
                .collect();
            tasks.sort_by(|a, b| a.arrival.total_cmp(&b.arrival));
            tasks
        })
    }

    fn scripts() -> impl Strategy<Value = Vec<(f64, i32)>> {
        prop::collection::vec((0u32..300, 0i32..6), 1..8).prop_map(|mut steps| {
            steps.sort();
            let mut script: Vec<(f64, i32)> =
                steps.into_iter().map(|(t, n)| (f64::from(t), n)).collect();
            // Always end with pods, so that every task starts.
            script.push((300.0, 2));
            script
        })
    }

    proptest! {
        #![proptest_config(Config { cases: 200, failure_persistence: None, ..Config::default() })]

        #[test]
        fn every_run_keeps_the_invariants(
            tasks in traces(),
            script in scripts(),
            early in any::<bool>(),
            prefetch in 1u32..4,
            concurrency in 1u32..3,
            startup in 0u32..20,
        ) {
            let config = ClusterConfig {
                ack: if early { Ack::Early } else { Ack::Late },
                prefetch,
                concurrency,
                startup: f64::from(startup),
                horizon: 2000.0,
                ..ClusterConfig::default()
            };
            let mut policy = Script::new(&script);
            let result = run(&tasks, &config, &mut policy).expect("runs");
            check_invariants(&result, concurrency);
            // The queue never shows more tasks than have arrived.
            for &(t, visible, in_flight) in &policy.seen {
                let arrived = tasks.iter().filter(|x| x.arrival <= t).count() as u64;
                prop_assert!(visible + in_flight <= arrived, "at {t}: {visible} + {in_flight} > {arrived}");
            }
            // Late ack without prefetch room beyond the slots: FIFO starts.
            if !early && prefetch == 1 {
                let starts: Vec<f64> = result.tasks.iter().map(|t| t.start.expect("started")).collect();
                prop_assert!(starts.windows(2).all(|w| w[0] <= w[1]), "{starts:?}");
            }
        }
    }
}
