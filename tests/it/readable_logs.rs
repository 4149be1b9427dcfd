//! Logs a person can read: a failing Kubernetes request is logged once with its reason and
//! status, never with the response body, and not on every retry.

use crate::support;

use std::time::Duration;

use support::apiserver::Fault;
use support::broker_procs::unique;
use support::brokers::redis_port;
use support::controller::ControllerProcess;
use support::e2e::{self, spec, start_server};

const NS: &str = "logs";

/// A pods list the client cannot decode (here `items` is a string) is retried by the
/// watch with backoff; the log has one WARN line naming the watch and what could not be
/// decoded, no trace of the body, and one INFO line once the list works again.
#[tokio::test(flavor = "multi_thread")]
async fn an_undecodable_pods_list_is_logged_once_without_its_body() {
    let server = start_server().await;
    let marker = "BODY-MARKER-".repeat(200);
    let body =
        format!(r#"{{"kind":"PodList","apiVersion":"v1","metadata":{{}},"items":"{marker}"}}"#);
    let fault = server.inject(
        Fault::reply(200, &body)
            .method("GET")
            .path_contains("/pods"),
    );
    let queue = unique("logs");
    e2e::add_worker(
        &server,
        NS,
        "worker",
        0,
        spec(
            &format!("redis://127.0.0.1:{}/6/{queue}", redis_port()),
            "worker",
            0,
            5,
            10,
        ),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let controller = ControllerProcess::start(&server, dir.path(), "logs", &["--log-level=info"]);
    // The watcher retries with backoff from about a second: several failed lists.
    support::broker_procs::eventually(
        Duration::from_secs(60),
        "several failed pod lists",
        async || (server.requests("GET", "/pods").len() >= 4).then_some(()),
    )
    .await;
    let log = controller.log_text();
    assert!(
        !log.contains("BODY-MARKER"),
        "the body reached the log:\n{log}"
    );
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains(" WARN ")).collect();
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    assert!(
        warnings[0].contains("watch=\"pods\"") || warnings[0].contains("watch=pods"),
        "{}",
        warnings[0]
    );
    assert!(
        warnings[0].contains("could not be decoded"),
        "{}",
        warnings[0]
    );

    server.remove_fault(fault);
    support::broker_procs::eventually(
        Duration::from_secs(60),
        "the pods watch to recover",
        async || {
            controller
                .log_text()
                .contains("watch works again")
                .then_some(())
        },
    )
    .await;
    let log = controller.log_text();
    assert_eq!(
        log.lines().filter(|l| l.contains(" WARN ")).count(),
        1,
        "{log}"
    );
}
