//! The simulator walks practo's decision branches; every expected row is worked out by hand
//! from practo v1.6's algorithm (see the comments), not by running the engine.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_workerpodautoscaler");

fn simulate(wpa: &str, trace: &str, extra: &[&str]) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let wpa_path = dir.path().join("wpa.yaml");
    let trace_path = dir.path().join("trace.csv");
    std::fs::write(&wpa_path, wpa).expect("write wpa");
    std::fs::write(&trace_path, trace).expect("write trace");
    let output = Command::new(BIN)
        .args(["simulate", "--wpa"])
        .arg(&wpa_path)
        .arg("--trace")
        .arg(&trace_path)
        .args(extra)
        .output()
        .expect("binary runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8")
}

const WPA: &str = "apiVersion: k8s.practo.dev/v1
kind: WorkerPodAutoScaler
metadata:
  name: branches
spec:
  minReplicas: 1
  maxReplicas: 8
  targetMessagesPerWorker: 10
  maxDisruption: \"50%\"
  secondsToProcessOneJob: 6
  deploymentName: worker
  queueURI: redis://redis:6379/0/q
";

#[test]
fn every_practo_branch_in_one_trace() {
    let trace = "t,messages,in_flight,sent_per_minute,idle
0,0,0,0,0
10,55,0,0,0
20,60,0,0,0
30,20,5,0,0
200,20,5,0,0
210,0,0,120,0
220,0,0,30,0
400,0,0,30,0
410,0,0,0,0
600,0,0,0,0
610,0,0,0,1
800,0,0,0,1
810,0,0,0,1
";
    let expected = "t,messages,in_flight,current,desired,reason
0,0,0,0,1,BelowMin
10,55,0,1,6,ScaleUpBacklog
20,60,0,6,6,WithinTolerance
30,20,5,6,6,ScaleDownDelayed
200,20,5,6,3,ScaleDownBacklog
210,0,0,3,8,KeepRateFloor
220,0,0,8,8,ScaleDownDelayed
400,0,0,8,4,KeepRateFloor
410,0,0,4,4,ScaleDownDelayed
600,0,0,4,2,ScaleDownToMin
610,0,0,2,2,ScaleDownDelayed
800,0,0,2,1,ScaleDownIdle
810,0,0,1,1,NoChange
";
    // t=0:   current 0 -> desired ceil(0/10)=0, clamped up to min 1.
    // t=10:  ceil(55/10)=6; |6-1|/1 > 0.1 -> 6.
    // t=20:  ceil(60/10)=6 = current: within the 10% tolerance.
    // t=30:  backlog 25 -> 3; 50% of 6 = 3 may go; but the last scale was at t=10 < 100 s ago.
    // t=200: same, now 190 s after the last scale -> 3.
    // t=210: no backlog, 120 sent/min x 6 s / 60 = 12 >= max 8 -> max (never delayed: up).
    // t=220: floor ceil(30 x 6 / 60) = 3; 50% of 8 = 4 may go -> 4, but delayed (t=210).
    // t=400: allowed -> 4.
    // t=410: no backlog, not idle -> toward min 1 by at most ceil(50% x 4) = 2 -> 2; delayed.
    // t=600: allowed -> 2.
    // t=610: idle -> massive scale-down to min 1 (maxDisruption ignored); delayed (t=600).
    // t=800: allowed -> 1.
    // t=810: already at min.
    assert_eq!(
        simulate(
            WPA,
            trace,
            &["--initial-replicas", "0", "--scale-down-delay", "100"]
        ),
        expected
    );
}

#[test]
fn min_equal_to_max_always_returns_max() {
    let wpa = WPA.replace("minReplicas: 1", "minReplicas: 8");
    let out = simulate(
        &wpa,
        "t,messages\n0,0\n10,500\n20,0\n",
        &["--initial-replicas", "2"],
    );
    assert_eq!(
        out,
        "t,messages,in_flight,current,desired,reason\n\
         0,0,0,2,8,MinEqualsMax\n\
         10,500,0,8,8,MinEqualsMax\n\
         20,0,0,8,8,MinEqualsMax\n"
    );
}

#[test]
fn percent_disruption_rounds_up_and_default_flag_applies() {
    // No maxDisruption in the spec: the flag decides. 10% of 9 = 0.9 -> 1 worker per step.
    let wpa = WPA.replace("  maxDisruption: \"50%\"\n", "");
    let out = simulate(
        &wpa,
        "t,messages\n0,0\n",
        &[
            "--initial-replicas",
            "9",
            "--wpa-default-max-disruption",
            "10%",
        ],
    );
    assert!(out.ends_with("0,0,0,9,8,ScaleDownToMin\n"), "{out}");
}
