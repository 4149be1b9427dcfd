//! A start with many WPAs under a tight client-side API budget: queues are polled at once,
//! scale writes overtake the start-up status writes, and SIGTERM stops scale writes.

use crate::support;

use std::time::{Duration, Instant};

use support::apiserver::{ApiServerDouble, Gvr};
use support::brokers::{redis_conn, redis_port, unique};
use support::controller::{ControllerProcess, metric_value};
use support::e2e::{self, spec, start_server};

const NS: &str = "startup";
const DB: u8 = 6;
const WPAS: usize = 200;

fn list(prefix: &str, i: usize) -> String {
    format!("{prefix}-{i}")
}

fn name(i: usize) -> String {
    format!("worker-{i}")
}

/// `count` workers at zero replicas, each with a WPA on its own (empty) Redis list.
fn add_workers(server: &ApiServerDouble, prefix: &str, count: usize) {
    for i in 0..count {
        let uri = format!(
            "redis://127.0.0.1:{}/{DB}/{}",
            redis_port(),
            list(prefix, i)
        );
        e2e::add_worker(server, NS, &name(i), 0, spec(&uri, &name(i), 0, 5, 10));
    }
}

/// Deletes the Redis lists of these workers.
fn delete_lists(prefix: &str, workers: impl IntoIterator<Item = usize>) {
    let mut conn = redis_conn(redis_port(), DB);
    for i in workers {
        let _: () = redis::cmd("DEL")
            .arg(list(prefix, i))
            .query(&mut conn)
            .expect("DEL");
    }
}

fn status_writes(server: &ApiServerDouble) -> usize {
    server
        .requests("PATCH", "/status")
        .iter()
        .filter(|r| r.path.contains("/workerpodautoscalers/"))
        .count()
}

/// Puts one job into every worker's list and waits for the first scale write (with the
/// caller's tight scale pacing, most of the others are left waiting for tokens).
async fn push_everywhere_until_the_first_scale(server: &ApiServerDouble, prefix: &str) {
    let mut conn = redis_conn(redis_port(), DB);
    for i in 0..WPAS {
        e2e::lpush_jobs(&mut conn, &list(prefix, i), 1);
    }
    let first = Instant::now();
    while (0..WPAS).all(|i| server.scale_patches(NS, &name(i)).is_empty()) {
        assert!(
            first.elapsed() < Duration::from_secs(20),
            "no scale write at all"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Fewer than half the workers were scaled: the test had writes waiting when it stopped
/// the controller.
fn assert_writes_were_waiting(server: &ApiServerDouble) {
    let scaled = (0..WPAS)
        .filter(|&i| !server.scale_patches(NS, &name(i)).is_empty())
        .count();
    assert!(
        scaled < WPAS / 2,
        "{scaled} scaled: the test needs writes waiting"
    );
}

/// Waits until the controller polls every WPA's queue (`wpa_queue_poll_loops`).
async fn wait_all_polled(controller: &ControllerProcess, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let metrics = controller.metrics().await;
        if metric_value(&metrics, "wpa_queue_poll_loops") == Some(WPAS as f64) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "only {:?} of {WPAS} queues polled after {within:?}",
            metric_value(&metrics, "wpa_queue_poll_loops")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_is_scaled_before_the_start_up_status_writes_finish() {
    let server = start_server().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let prefix = unique("startup-burst");
    add_workers(&server, &prefix, WPAS);
    // 2 requests/s: the 200 first statuses alone need 100 s of budget.
    let controller = ControllerProcess::start(
        &server,
        dir.path(),
        "startup",
        &["--k8s-api-qps=2", "--k8s-api-burst=10"],
    );
    // Queues first: every queue is polled long before its WPA could have had a status.
    wait_all_polled(&controller, Duration::from_secs(20)).await;

    let burst: Vec<usize> = (0..10).map(|k| k * 19 + 3).collect();
    let mut conn = redis_conn(redis_port(), DB);
    for &i in &burst {
        e2e::lpush_jobs(&mut conn, &list(&prefix, i), 1);
    }
    let pushed = Instant::now();
    for &i in &burst {
        e2e::wait_replicas(&server, NS, &name(i), 1, "burst at start-up", &controller).await;
    }
    let scaled_in = pushed.elapsed();
    let written = status_writes(&server);
    assert!(
        written < WPAS,
        "the burst waited for the start-up status writes ({written} of {WPAS} were done)"
    );
    // Each scale write came straight from the budget: ten writes at 2/s after the bucket
    // drained take about 5 s; far from the 100 s the statuses need.
    assert!(
        scaled_in < Duration::from_secs(30),
        "burst scaled in {scaled_in:?}"
    );
    for i in (0..WPAS).filter(|i| !burst.contains(i)) {
        assert!(server.scale_patches(NS, &name(i)).is_empty(), "{}", name(i));
    }
    let metrics = controller.metrics().await;
    let pending = metric_value(&metrics, "wpa_status_writes_pending");
    assert!(pending.is_some_and(|p| p > 0.0), "{metrics}");
    // The wait is counted when a status write gets its token, which on a busy machine can
    // come after the burst was scaled (the start-up reads take the first tokens).
    let waited_since = Instant::now();
    loop {
        let metrics = controller.metrics().await;
        let waited = metric_value(
            &metrics,
            "wpa_k8s_api_pacing_wait_seconds_total{kind=\"status\"}",
        );
        if waited.is_some_and(|w| w > 0.0) {
            break;
        }
        assert!(
            waited_since.elapsed() < Duration::from_secs(30),
            "no status write waited for the pacing: {metrics}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    delete_lists(&prefix, burst);
}

#[tokio::test(flavor = "multi_thread")]
async fn no_scale_write_starts_after_sigterm() {
    let server = start_server().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let prefix = unique("startup-term");
    add_workers(&server, &prefix, WPAS);
    // One request every 2 s: the scale writes below queue up in the budget.
    let mut controller = ControllerProcess::start(
        &server,
        dir.path(),
        "sigterm",
        &[
            "--k8s-api-qps=0.5",
            "--k8s-api-burst=1",
            "--k8s-api-scale-qps=0.5",
            "--k8s-api-scale-burst=1",
        ],
    );
    wait_all_polled(&controller, Duration::from_secs(20)).await;
    // Let the first scale writes through, with many more waiting for tokens.
    push_everywhere_until_the_first_scale(&server, &prefix).await;
    let signalled = jiff::Timestamp::now();
    let code = controller.terminate();
    assert_eq!(code, Some(0), "log:\n{}", controller.log_text());
    assert_writes_were_waiting(&server);
    // A write already on the wire may land just after the signal; none may start later.
    let late: Vec<String> = server
        .requests("PATCH", "/scale")
        .iter()
        .filter(|r| r.at > signalled + jiff::SignedDuration::from_millis(500))
        .map(|r| format!("{} at {}", r.path, r.at))
        .collect();
    assert!(late.is_empty(), "scale writes after SIGTERM: {late:?}");
    assert!(
        controller
            .log_text()
            .contains("graceful shutdown requested"),
        "{}",
        controller.log_text()
    );
    delete_lists(&prefix, 0..WPAS);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_leader_that_loses_its_lease_sends_none_of_its_waiting_writes() {
    let server = start_server().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let prefix = unique("startup-lease");
    add_workers(&server, &prefix, WPAS);
    let mut controller = ControllerProcess::start(
        &server,
        dir.path(),
        "old-leader",
        &[
            "--leader-elect",
            "--leader-election-namespace=kube-system",
            "--leader-election-lease-duration=3",
            // One scale write every 2 s: the burst below queues up in the budget.
            "--k8s-api-scale-qps=0.5",
            "--k8s-api-scale-burst=1",
        ],
    );
    wait_all_polled(&controller, Duration::from_secs(30)).await;
    // Let the first scale writes through, with many more waiting for tokens.
    push_everywhere_until_the_first_scale(&server, &prefix).await;
    // Another controller takes the lease (as a new leader would after a partition).
    let stolen = jiff::Timestamp::now();
    server
        .modify(
            &Gvr::LEASES,
            Some("kube-system"),
            "workerpodautoscaler",
            |lease| {
                lease["spec"]["holderIdentity"] = serde_json::json!("new-leader");
                lease["spec"]["leaseDurationSeconds"] = serde_json::json!(3600);
                lease["spec"]["renewTime"] =
                    serde_json::json!(stolen.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string());
            },
        )
        .expect("lease taken over");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !controller.has_exited() {
        assert!(
            Instant::now() < deadline,
            "the old leader keeps running:\n{}",
            controller.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        controller.log_text().contains("lost the leader lease"),
        "{}",
        controller.log_text()
    );
    assert_writes_were_waiting(&server);
    // It notices within its renew period (1 s here); a write already on the wire may land
    // just after. None of the many waiting writes may follow.
    let late: Vec<String> = server
        .writes()
        .iter()
        .filter(|r| !r.path.contains("/leases/"))
        .filter(|r| r.at > stolen + jiff::SignedDuration::from_millis(2500))
        .map(|r| format!("{} {} at {}", r.method, r.path, r.at))
        .collect();
    assert!(late.is_empty(), "writes after the lease was lost: {late:?}");
    delete_lists(&prefix, 0..WPAS);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_start_costs_one_status_write_per_wpa() {
    let server = start_server().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let prefix = unique("startup-once");
    let count = 40;
    add_workers(&server, &prefix, count);
    // Default pacing (5/s, burst 10), as a user starts it.
    let controller = ControllerProcess::start(&server, dir.path(), "once", &[]);
    for i in 0..count {
        e2e::wait_status(&server, NS, &name(i), "first status", &controller, |s| {
            s["lastDecisionReason"] == "NoChange"
        })
        .await;
    }
    // Several polls and idle-window ends later, nothing changed: nothing more is written.
    tokio::time::sleep(Duration::from_secs(4)).await;
    for i in 0..count {
        let writes = server
            .requests(
                "PATCH",
                &format!("/workerpodautoscalers/{}/status", name(i)),
            )
            .len();
        if writes != 1 {
            let bodies: Vec<String> = server
                .requests(
                    "PATCH",
                    &format!("/workerpodautoscalers/{}/status", name(i)),
                )
                .iter()
                .map(|r| format!("{} {}", r.at, r.body))
                .collect();
            panic!("{} status writes of {}: {bodies:#?}", writes, name(i));
        }
    }
}
