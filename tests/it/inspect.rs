//! `inspect` (the function behind `workerpodautoscaler inspect`) against a real Redis.

use crate::support;

use std::time::Duration;

use redis::Commands;
use support::brokers::{celery_produce, free_port, redis_broker, redis_conn, redis_port, unique};
use wpa::queue::inspect::inspect;
use wpa::queue::{Credentials, ProviderOptions};

/// This file's Redis database.
const DB: u8 = 3;

fn options(idle_window: Duration) -> ProviderOptions {
    ProviderOptions {
        request_timeout: Duration::from_secs(2),
        idle_window,
        ..ProviderOptions::default()
    }
}

fn lines(out: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect()
}

#[tokio::test]
async fn one_poll_prints_one_json_line() {
    let queue = unique("inspect");
    celery_produce(&redis_broker(redis_port(), DB), &queue, 4, &[]);
    let uri = format!("redis://127.0.0.1:{}/{DB}/{queue}", redis_port());
    let mut out = Vec::new();
    inspect(
        std::slice::from_ref(&uri),
        None,
        Credentials::default(),
        options(Duration::from_secs(60)),
        &mut out,
    )
    .await
    .unwrap();
    let lines = lines(&out);
    assert_eq!(lines.len(), 1);
    let l = &lines[0];
    assert_eq!(l["provider"], "redis");
    assert_eq!(
        l["queue"],
        format!("redis://127.0.0.1:{}/{DB}/{queue}", redis_port())
    );
    assert_eq!(l["visible"], 4);
    assert_eq!(l["in_flight"], 0);
    assert!(l["delayed"].is_null() && l["sent_per_minute"].is_null() && l["consumers"].is_null());
    // Backlog: known busy.
    assert_eq!(l["idle"], false);
    let sampled = l["sampled_at"].as_str().unwrap();
    assert!(sampled.parse::<jiff::Timestamp>().is_ok(), "{sampled}");
    let keys: Vec<&str> = l.as_object().unwrap().keys().map(String::as_str).collect();
    for key in [
        "provider",
        "queue",
        "visible",
        "in_flight",
        "delayed",
        "sent_per_minute",
        "consumers",
        "idle",
        "sampled_at",
    ] {
        assert!(keys.contains(&key), "missing {key}");
    }
}

#[tokio::test]
async fn several_queues_print_a_line_each_and_their_total() {
    let (a, b) = (unique("inspect-a"), unique("inspect-b"));
    celery_produce(&redis_broker(redis_port(), DB), &a, 3, &[]);
    celery_produce(&redis_broker(redis_port(), DB), &b, 2, &[]);
    let uris: Vec<String> = [&a, &b]
        .iter()
        .map(|q| format!("redis://127.0.0.1:{}/{DB}/{q}", redis_port()))
        .collect();
    let mut out = Vec::new();
    inspect(
        &uris,
        None,
        Credentials::default(),
        options(Duration::from_secs(60)),
        &mut out,
    )
    .await
    .unwrap();
    let lines = lines(&out);
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(
        (lines[0]["queue"].as_str(), lines[0]["visible"].as_u64()),
        (Some(uris[0].as_str()), Some(3))
    );
    assert_eq!(
        (lines[1]["queue"].as_str(), lines[1]["visible"].as_u64()),
        (Some(uris[1].as_str()), Some(2))
    );
    let total = &lines[2];
    assert_eq!(total["total"], true);
    assert_eq!(total["visible"], 5);
    assert_eq!(total["in_flight"], 0);
    assert_eq!(total["idle"], false);
    assert!(total.get("provider").is_none(), "{total}");
    assert_eq!(total["queue"], format!("{}, {}", uris[0], uris[1]));
}

#[tokio::test]
async fn watch_infers_idle_over_the_window() {
    let queue = unique("inspect-idle");
    let uri = format!("redis://127.0.0.1:{}/{DB}/{queue}", redis_port());
    let mut out = Vec::new();
    // Watching never ends by itself: stop it after a while, as Ctrl-C would.
    let run = inspect(
        std::slice::from_ref(&uri),
        Some(Duration::from_millis(200)),
        Credentials::default(),
        options(Duration::from_millis(600)),
        &mut out,
    );
    let stopped = tokio::time::timeout(Duration::from_millis(2500), run).await;
    assert!(stopped.is_err(), "watch returned early: {stopped:?}");
    let lines = lines(&out);
    assert!(lines.len() >= 4, "{} lines", lines.len());
    // Empty from the start: unknown until the window is covered, then idle.
    assert!(lines[0]["idle"].is_null(), "{}", lines[0]);
    assert_eq!(lines.last().unwrap()["idle"], true);
    assert!(lines.iter().all(|l| l["visible"] == 0));
}

#[tokio::test]
async fn backlog_makes_watch_busy() {
    let queue = unique("inspect-busy");
    let _: () = redis_conn(redis_port(), DB).rpush(&queue, "x").unwrap();
    let uri = format!("redis://127.0.0.1:{}/{DB}/{queue}", redis_port());
    let mut out = Vec::new();
    let run = inspect(
        std::slice::from_ref(&uri),
        Some(Duration::from_millis(200)),
        Credentials::default(),
        options(Duration::ZERO),
        &mut out,
    );
    let _ = tokio::time::timeout(Duration::from_millis(900), run).await;
    let lines = lines(&out);
    assert!(!lines.is_empty());
    assert!(
        lines
            .iter()
            .all(|l| l["idle"] == false && l["visible"] == 1)
    );
    let _: () = redis_conn(redis_port(), DB).del(&queue).unwrap();
}

#[tokio::test]
async fn exit_codes_for_bad_uri_and_unreachable_broker() {
    let mut out = Vec::new();
    let err = inspect(
        &["redis://user:topsecret@127.0.0.1/notadb/q".to_string()],
        None,
        Credentials::default(),
        options(Duration::from_secs(60)),
        &mut out,
    )
    .await
    .unwrap_err();
    assert_eq!(err.exit_code(), 1);
    assert!(err.to_string().contains("bad db"), "{err}");
    assert!(!err.to_string().contains("topsecret"), "{err}");

    let port = free_port();
    let err = inspect(
        &[format!("redis://user:topsecret@127.0.0.1:{port}/0/q")],
        None,
        Credentials::default(),
        options(Duration::from_secs(60)),
        &mut out,
    )
    .await
    .unwrap_err();
    assert_eq!(err.exit_code(), 2);
    assert!(!err.to_string().contains("topsecret"), "{err}");
    assert!(out.is_empty(), "nothing printed on failure");
}

#[tokio::test]
async fn output_never_shows_the_password() {
    let server = support::brokers::RedisServer::start(&["--requirepass", "pw-in-uri"]);
    let queue = unique("q");
    let uri = format!("redis://:pw-in-uri@127.0.0.1:{}/0/{queue}", server.port);
    let mut out = Vec::new();
    inspect(
        std::slice::from_ref(&uri),
        None,
        Credentials::default(),
        options(Duration::from_secs(60)),
        &mut out,
    )
    .await
    .unwrap();
    let lines = lines(&out);
    assert_eq!(
        lines[0]["queue"],
        format!("redis://:***@127.0.0.1:{}/0/{queue}", server.port)
    );
    assert!(!String::from_utf8_lossy(&out).contains("pw-in-uri"));
}

#[tokio::test]
async fn watch_reports_failed_polls_and_goes_on() {
    let mut server = support::brokers::RedisServer::start(&[]);
    let queue = unique("inspect-outage");
    let uri = format!("redis://127.0.0.1:{}/0/{queue}", server.port);
    let mut out = Vec::new();
    let watching = tokio::time::timeout(
        Duration::from_secs(4),
        inspect(
            std::slice::from_ref(&uri),
            Some(Duration::from_millis(200)),
            Credentials::default(),
            options(Duration::from_secs(60)),
            &mut out,
        ),
    );
    let outage = async {
        tokio::time::sleep(Duration::from_millis(800)).await;
        server.stop();
        tokio::time::sleep(Duration::from_millis(800)).await;
        server.restart();
    };
    let (stopped, ()) = tokio::join!(watching, outage);
    assert!(stopped.is_err(), "watch ended by itself: {stopped:?}");
    let lines = lines(&out);
    let first_error = lines
        .iter()
        .position(|l| l.get("error").is_some())
        .expect("an error line while the server was down");
    assert!(first_error > 0, "polls before the outage succeeded");
    assert!(
        lines[first_error]["error"]
            .as_str()
            .unwrap()
            .contains("cannot reach")
    );
    assert!(
        lines[first_error..]
            .iter()
            .any(|l| l.get("visible").is_some()),
        "polls after the restart succeeded again"
    );
}
