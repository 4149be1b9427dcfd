//! Helpers for tests that run the controller binary against the API double: workers and
//! WPAs, waiting on replicas and status with deadlines, and reading what the controller
//! wrote (scale PATCHes, replica history, Events).

use std::time::Duration;

use serde_json::{Value, json};

use super::apiserver::{ApiServerDouble, Gvr, objects};
use super::controller::{ControllerProcess, wpa, wpa_status};

/// Generous: the machine is shared and slow; fast paths finish long before.
pub const WAIT: Duration = Duration::from_secs(60);

/// A WPA spec scaling `deployment` on `queue_uri`.
pub fn spec(queue_uri: &str, deployment: &str, min: i32, max: i32, target: i32) -> Value {
    json!({
        "minReplicas": min,
        "maxReplicas": max,
        "targetMessagesPerWorker": target,
        "deploymentName": deployment,
        "queueURI": queue_uri,
    })
}

/// An API double whose workloads report their replicas as available at once.
pub async fn start_server() -> ApiServerDouble {
    let server = ApiServerDouble::start().await.expect("API double starts");
    server.simulate_workloads(Some(Duration::ZERO));
    server
}

/// A worker Deployment at `replicas` and the WPA that scales it, both named `name`.
pub fn add_worker(server: &ApiServerDouble, ns: &str, name: &str, replicas: i32, spec: Value) {
    server
        .insert(objects::deployment(ns, name, replicas))
        .expect("deployment");
    server.insert(wpa(ns, name, spec)).expect("wpa");
}

/// `spec.replicas` of a workload.
pub fn replicas(server: &ApiServerDouble, gvr: &Gvr, ns: &str, name: &str) -> Option<i64> {
    server
        .get(gvr, Some(ns), name)
        .and_then(|d| d["spec"]["replicas"].as_i64())
}

/// Waits until the workload `gvr ns/name` has `want` replicas; panics with the evidence.
pub async fn wait_replicas_of(
    server: &ApiServerDouble,
    gvr: &Gvr,
    ns: &str,
    name: &str,
    want: i64,
    what: &str,
    controller: &ControllerProcess,
) {
    let reached = server
        .wait_for(WAIT, |s| {
            (replicas(s, gvr, ns, name) == Some(want)).then_some(())
        })
        .await;
    assert!(
        reached.is_some(),
        "{what}: {name} never reached {want} replicas (now {:?}, patches {:?}, status {})\ncontroller log:\n{}",
        replicas(server, gvr, ns, name),
        server.scale_patches(ns, name),
        wpa_status(server, ns, name),
        controller.log_text()
    );
}

/// [`wait_replicas_of`] for a Deployment.
pub async fn wait_replicas(
    server: &ApiServerDouble,
    ns: &str,
    name: &str,
    want: i64,
    what: &str,
    controller: &ControllerProcess,
) {
    wait_replicas_of(server, &Gvr::DEPLOYMENTS, ns, name, want, what, controller).await;
}

/// Waits until the WPA's status satisfies `check`; returns that status.
pub async fn wait_status(
    server: &ApiServerDouble,
    ns: &str,
    name: &str,
    what: &str,
    controller: &ControllerProcess,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let found = server
        .wait_for(WAIT, |s| {
            let status = s.get(&Gvr::WORKER_POD_AUTOSCALERS, Some(ns), name)?["status"].clone();
            check(&status).then_some(status)
        })
        .await;
    match found {
        Some(status) => status,
        None => panic!(
            "{what}: status of {name} never matched: {}\ncontroller log:\n{}",
            wpa_status(server, ns, name),
            controller.log_text()
        ),
    }
}

/// The WPA's condition `type_` has this status and reason.
pub fn has_condition(status: &Value, type_: &str, cond_status: &str, reason: &str) -> bool {
    super::controller::condition(status, type_)
        .is_some_and(|c| c["status"] == cond_status && c["reason"] == reason)
}

/// The message of the WPA's condition `type_` ("" when absent).
pub fn condition_message(status: &Value, type_: &str) -> String {
    super::controller::condition(status, type_)
        .and_then(|c| c["message"].as_str().map(str::to_string))
        .unwrap_or_default()
}

/// True when the replica counts never go down from one entry to the next.
pub fn never_decreases(history: &[i64]) -> bool {
    history.windows(2).all(|w| w[1] >= w[0])
}

/// Every Event (events.k8s.io and core) in `ns`, as stored.
pub fn all_events(server: &ApiServerDouble, ns: &str) -> Vec<Value> {
    let mut events = server.list(&Gvr::EVENTS, Some(ns));
    events.extend(server.list(&Gvr::CORE_EVENTS, Some(ns)));
    events
}

/// Events about the object `name` with this reason.
pub fn events_with_reason(
    server: &ApiServerDouble,
    ns: &str,
    name: &str,
    reason: &str,
) -> Vec<Value> {
    all_events(server, ns)
        .into_iter()
        .filter(|e| {
            let regarding = if e["regarding"].is_object() {
                &e["regarding"]
            } else {
                &e["involvedObject"]
            };
            regarding["name"] == name && e["reason"] == reason
        })
        .collect()
}

/// Waits (up to 10 s: the controller publishes Events in the background) for Events about
/// `name` with this reason of which one satisfies `matches`; returns them all.
pub async fn wait_events(
    server: &ApiServerDouble,
    ns: &str,
    name: &str,
    reason: &str,
    matches: impl Fn(&Value) -> bool,
) -> Vec<Value> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let events = events_with_reason(server, ns, name, reason);
        if events.iter().any(&matches) {
            return events;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no matching {reason} Event about {name}: {events:?}; all: {:?}",
            all_events(server, ns)
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Asserts the controller process is still running and never panicked.
pub fn assert_alive(controller: &mut ControllerProcess) {
    assert!(
        !controller.has_exited(),
        "the controller exited; log:\n{}",
        controller.log_text()
    );
    let log = controller.log_text();
    assert!(!log.contains("panicked"), "the controller panicked:\n{log}");
}

/// `LPUSH key` `n` jobs on a Redis server.
pub fn redis_push(port: u16, db: u8, key: &str, n: usize) {
    lpush_jobs(&mut super::brokers::redis_conn(port, db), key, n);
}

/// `LPUSH key` `n` jobs on an open connection.
pub fn lpush_jobs(conn: &mut redis::Connection, key: &str, n: usize) {
    let items: Vec<String> = (0..n).map(|i| format!("job-{i}")).collect();
    redis::cmd("LPUSH")
        .arg(key)
        .arg(&items)
        .query::<()>(conn)
        .expect("LPUSH");
}

/// Asserts the successful scale PATCHes of `ns/name` are exactly `want`. The double records
/// a request just after applying it, so a test that saw the replicas change may look a
/// moment before the PATCH is listed: allow a few seconds for that.
pub async fn assert_patches(server: &ApiServerDouble, ns: &str, name: &str, want: &[i32]) {
    let matched = server
        .wait_for(Duration::from_secs(5), |s| {
            (s.scale_patches(ns, name) == want).then_some(())
        })
        .await;
    assert!(
        matched.is_some(),
        "scale PATCHes of {name}: {:?}, expected {want:?}",
        server.scale_patches(ns, name)
    );
}
