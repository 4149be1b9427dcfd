//! End to end, features not covered by controller_e2e.rs: the pause annotation, broker
//! credentials from a Secret (and that they never leak), and a generic scale target (a
//! StatefulSet through its /scale subresource). The real controller binary, the API double
//! and private redis-server processes.

use crate::support;

use k8s_openapi::ByteString;
use serde_json::{Value, json};
use support::apiserver::{ApiServerDouble, Gvr, objects};
use support::brokers::{RedisServer, redis_conn};
use support::controller::{ControllerProcess, wpa, wpa_status};
use support::e2e::{
    add_worker, all_events, assert_alive, assert_patches, condition_message, has_condition,
    redis_push, replicas, spec, start_server, wait_replicas, wait_replicas_of, wait_status,
};

const NS: &str = "features";

fn redis_uri(port: u16, queue: &str) -> String {
    format!("redis://127.0.0.1:{port}/0/{queue}")
}

#[tokio::test(flavor = "multi_thread")]
async fn pause_annotation_freezes_scaling_and_removing_it_resumes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let redis = RedisServer::start(&[]);
    let server = start_server().await;
    let queue = support::brokers::unique("features-pause");
    server
        .insert(objects::deployment(NS, "worker", 0))
        .expect("deployment");
    let mut paused = wpa(
        NS,
        "worker",
        spec(&redis_uri(redis.port, &queue), "worker", 0, 10, 10),
    );
    paused["metadata"]["annotations"] = json!({"k8s.practo.dev/paused": "true"});
    server.insert(paused).expect("wpa");
    let mut controller = ControllerProcess::start(&server, dir.path(), "pause", &[]);

    redis_push(redis.port, 0, &queue, 25);
    let status = wait_status(&server, NS, "worker", "paused decision", &controller, |s| {
        has_condition(s, "AbleToScale", "False", "Paused")
            && condition_message(s, "AbleToScale").contains("would scale to 3")
    })
    .await;
    assert_eq!(status["DesiredReplicas"], 3, "{status}");
    assert_eq!(status["CurrentMessages"], 25, "{status}");
    assert!(
        condition_message(&status, "AbleToScale").contains("k8s.practo.dev/paused"),
        "{status}"
    );
    // A second decision while paused (more backlog): still no PATCH.
    redis_push(redis.port, 0, &queue, 20);
    wait_status(
        &server,
        NS,
        "worker",
        "second paused decision",
        &controller,
        |s| condition_message(s, "AbleToScale").contains("would scale to 5"),
    )
    .await;
    assert!(
        server.scale_patches(NS, "worker").is_empty(),
        "a paused WPA must never PATCH /scale"
    );
    assert_eq!(replicas(&server, &Gvr::DEPLOYMENTS, NS, "worker"), Some(0));

    // Unpaused: it scales to what it said it would.
    server
        .modify(&Gvr::WORKER_POD_AUTOSCALERS, Some(NS), "worker", |w| {
            w["metadata"]["annotations"]
                .as_object_mut()
                .expect("annotations")
                .remove("k8s.practo.dev/paused");
        })
        .expect("remove the annotation");
    wait_replicas(&server, NS, "worker", 5, "resumed", &controller).await;
    let status = wait_status(&server, NS, "worker", "resumed status", &controller, |s| {
        s["CurrentReplicas"] == 5
    })
    .await;
    assert!(
        !has_condition(&status, "AbleToScale", "False", "Paused"),
        "{status}"
    );
    assert_patches(&server, NS, "worker", &[5]).await;

    // Paused again with workers running: backlog gone, still no scale-down.
    server
        .modify(&Gvr::WORKER_POD_AUTOSCALERS, Some(NS), "worker", |w| {
            w["metadata"]["annotations"] = json!({"k8s.practo.dev/paused": "true"});
        })
        .expect("pause again");
    let mut conn = redis_conn(redis.port, 0);
    redis::cmd("DEL")
        .arg(&queue)
        .query::<()>(&mut conn)
        .expect("DEL");
    wait_status(
        &server,
        NS,
        "worker",
        "paused scale-down",
        &controller,
        |s| {
            has_condition(s, "AbleToScale", "False", "Paused")
                && condition_message(s, "AbleToScale").contains("would scale to 0")
        },
    )
    .await;
    assert_patches(&server, NS, "worker", &[5]).await;
    assert_eq!(replicas(&server, &Gvr::DEPLOYMENTS, NS, "worker"), Some(5));
    assert_alive(&mut controller);
}

/// A Secret with these keys (values base64-encoded as the API stores them).
fn secret(name: &str, data: &[(&str, &str)]) -> Value {
    let data: serde_json::Map<String, Value> = data
        .iter()
        .map(|(k, v)| {
            let encoded = serde_json::to_value(ByteString(v.as_bytes().to_vec())).expect("base64");
            (k.to_string(), encoded)
        })
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": NS},
        "type": "Opaque",
        "data": data,
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn credentials_from_a_secret_scale_and_never_leak() {
    let dir = tempfile::tempdir().expect("tempdir");
    let password = format!("pw-{}", support::brokers::unique("s3cret"));
    let wrong_password = format!("pw-{}", support::brokers::unique("wrong"));
    let redis = RedisServer::start(&["--requirepass", &password]);
    let server = start_server().await;
    let queue = support::brokers::unique("features-secret");
    let uri = redis_uri(redis.port, &queue);
    server
        .insert(secret("redis-creds", &[("password", &password)]))
        .expect("secret");
    server
        .insert(secret("wrong-creds", &[("password", &wrong_password)]))
        .expect("secret");
    server
        .insert(secret("other-keys", &[("token", &password)]))
        .expect("secret");
    // (WPA, credentialsSecretRef)
    let wpas = [
        ("with-secret", json!({"name": "redis-creds"})),
        ("no-secret", json!({"name": "absent"})),
        ("no-key", json!({"name": "other-keys"})),
        (
            "named-key-missing",
            json!({"name": "redis-creds", "passwordKey": "redis-password"}),
        ),
        ("wrong-password", json!({"name": "wrong-creds"})),
    ];
    for (name, reference) in &wpas {
        let mut wpa_spec = spec(&uri, name, 0, 10, 10);
        wpa_spec["credentialsSecretRef"] = reference.clone();
        add_worker(&server, NS, name, 0, wpa_spec);
    }
    let mut controller = ControllerProcess::start(&server, dir.path(), "secrets", &[]);

    redis_push_auth(redis.port, &password, &queue, 25);
    wait_replicas(
        &server,
        NS,
        "with-secret",
        3,
        "password from the Secret",
        &controller,
    )
    .await;
    for (name, reason, words) in [
        ("no-secret", "SecretNotFound", "Secret absent not found"),
        ("no-key", "SecretKeyMissing", "has none of the keys"),
        (
            "named-key-missing",
            "SecretKeyMissing",
            "Secret redis-creds has no key redis-password",
        ),
    ] {
        let status = wait_status(&server, NS, name, reason, &controller, |s| {
            has_condition(s, "Ready", "False", reason)
        })
        .await;
        assert!(
            condition_message(&status, "Ready").contains(words),
            "{name}: {status}"
        );
        support::e2e::wait_events(&server, NS, name, reason, |_| true).await;
    }
    // A wrong password is the broker refusing us: metrics unavailable, replicas held.
    let status = wait_status(&server, NS, "wrong-password", "denied", &controller, |s| {
        has_condition(s, "MetricsAvailable", "False", "PollFailed")
    })
    .await;
    assert!(
        condition_message(&status, "MetricsAvailable").contains("access to"),
        "{status}"
    );
    // The healthy WPA kept scaling next to the broken ones.
    redis_push_auth(redis.port, &password, &queue, 20);
    wait_replicas(&server, NS, "with-secret", 5, "more backlog", &controller).await;
    for (name, _) in &wpas[1..] {
        assert!(server.scale_patches(NS, name).is_empty(), "{name}");
    }

    // Neither password, nor its base64 form, anywhere the controller writes or prints.
    let mut haystacks = vec![("controller log", controller.log_text())];
    haystacks.push((
        "events",
        serde_json::to_string(&all_events(&server, NS)).expect("json"),
    ));
    for (name, _) in &wpas {
        haystacks.push(("WPA status", wpa_status(&server, NS, name).to_string()));
    }
    let written: Vec<String> = server
        .writes()
        .iter()
        .map(|r| format!("{} {} {}", r.method, r.path, r.body))
        .collect();
    haystacks.push(("API writes", written.join("\n")));
    haystacks.push(("metrics", controller.metrics().await));
    for secret_value in [&password, &wrong_password] {
        let encoded = serde_json::to_value(ByteString(secret_value.as_bytes().to_vec()))
            .expect("base64")
            .as_str()
            .map(str::to_string)
            .expect("a string");
        let stored: Vec<String> = server
            .list(&Gvr::SECRETS, Some(NS))
            .iter()
            .filter_map(|s| s["data"]["password"].as_str().map(str::to_string))
            .collect();
        assert!(
            stored.contains(&encoded),
            "the scan looks for the stored form"
        );
        for (what, text) in &haystacks {
            assert!(!text.is_empty() || *what == "metrics", "{what} is empty");
            assert!(
                !text.contains(secret_value.as_str()) && !text.contains(&encoded),
                "a Secret value leaked into the {what}"
            );
        }
    }
    // A subscribed WPA reads its Secret once (again only after the refresh period or a spec
    // change), however often it is reconciled: wrong-password was reconciled on every
    // failed poll.
    assert_eq!(
        server.requests("GET", "/secrets/wrong-creds").len(),
        1,
        "Secret reads of a subscribed WPA"
    );
    assert_alive(&mut controller);
}

/// `LPUSH` on a Redis that requires a password.
fn redis_push_auth(port: u16, password: &str, key: &str, n: usize) {
    let client = redis::Client::open(format!("redis://:{password}@127.0.0.1:{port}/0"))
        .expect("redis client");
    let mut conn = client.get_connection().expect("connect with the password");
    support::e2e::lpush_jobs(&mut conn, key, n);
}

#[tokio::test(flavor = "multi_thread")]
async fn statefulset_scale_target_scales_through_its_scale_subresource() {
    let dir = tempfile::tempdir().expect("tempdir");
    let redis = RedisServer::start(&[]);
    let server: ApiServerDouble = start_server().await;
    let queue = support::brokers::unique("features-sts");
    server
        .insert(objects::statefulset(NS, "sts-workers", 0))
        .expect("statefulset");
    let mut wpa_spec = spec(&redis_uri(redis.port, &queue), "unused", 0, 10, 10);
    wpa_spec
        .as_object_mut()
        .expect("spec object")
        .remove("deploymentName");
    wpa_spec["scaleTargetRef"] =
        json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "sts-workers"});
    server
        .insert(wpa(NS, "sts-workers", wpa_spec))
        .expect("wpa");
    let mut controller = ControllerProcess::start(&server, dir.path(), "sts", &[]);

    redis_push(redis.port, 0, &queue, 25);
    wait_replicas_of(
        &server,
        &Gvr::STATEFULSETS,
        NS,
        "sts-workers",
        3,
        "25 messages",
        &controller,
    )
    .await;
    redis_push(redis.port, 0, &queue, 30);
    wait_replicas_of(
        &server,
        &Gvr::STATEFULSETS,
        NS,
        "sts-workers",
        6,
        "55 messages",
        &controller,
    )
    .await;
    let status = wait_status(&server, NS, "sts-workers", "reported", &controller, |s| {
        s["CurrentReplicas"] == 6 && s["AvailableReplicas"] == 6
    })
    .await;
    assert!(
        condition_message(&status, "Ready").contains("StatefulSet sts-workers"),
        "{status}"
    );
    assert_patches(&server, NS, "sts-workers", &[3, 6]).await;
    let paths: Vec<String> = server
        .requests("PATCH", "/scale")
        .iter()
        .map(|r| r.path.clone())
        .collect();
    assert!(
        paths
            .iter()
            .all(|p| p == "/apis/apps/v1/namespaces/features/statefulsets/sts-workers/scale"),
        "{paths:?}"
    );
    support::e2e::wait_events(&server, NS, "sts-workers", "ScaledUp", |e| {
        e["note"]
            .as_str()
            .is_some_and(|n| n.contains("scaled StatefulSet sts-workers from 0 to 3"))
    })
    .await;
    assert_alive(&mut controller);
}
