//! `simulate compare` and `simulate generate` from the command line: the shipped traces,
//! the docs' example tables, the outputs, the errors; and the engine's invariants on random
//! inputs.

use super::*;

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
    let with_wait = "practo:5,keda:5,maxwait:30,bound";
    let shipped = [
        "steady",
        "diurnal",
        "bursts",
        "long-tail",
        "burst-then-sparse",
    ]
    .map(|trace| (trace, with_wait, &bench[..]));
    let runs = runs.into_iter().chain(shipped);
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

    use super::super::*;
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
