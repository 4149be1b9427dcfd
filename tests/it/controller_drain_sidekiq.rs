//! The Sidekiq drain with the controller binary, real `sidekiq` processes as Pods, and a
//! controller killed mid-drain: a quiet process cannot take work again, so the restarted
//! controller takes the annotated pod over, drains it to the end and removes it, and never
//! the pod running a job.

use crate::support;

use std::time::{Duration, Instant};

use support::apiserver::Gvr;
use support::brokers::unique;
use support::controller::{ControllerProcess, event_reasons};
use support::framework_loop::{FrameworkLoop, Setup};
use support::sidekiq as sk;

const NS: &str = "sidekiq-drain";
const DEPLOYMENT: &str = "worker";
const DRAINING: &str = "k8s.practo.dev/draining";
/// Long enough that the drain outlives the controller's kill and restart.
const DRAIN_TIMEOUT: &str = "--drain-timeout=60";
const LONG_JOB: f64 = 45.0;

fn annotated(run: &FrameworkLoop) -> Vec<String> {
    run.server
        .live_pod_names(&Gvr::DEPLOYMENTS, NS, DEPLOYMENT)
        .into_iter()
        .filter(|pod| {
            run.server
                .get(&Gvr::PODS, Some(NS), pod)
                .is_some_and(|p| p["metadata"]["annotations"][DRAINING].is_string())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn sidekiq_drain_left_by_a_killed_controller_is_finished_after_restart() {
    let queue = unique("sk-drain-ctl");
    let ledger = unique("sk-drain-ctl-ledger");
    let flags = [DRAIN_TIMEOUT];
    let mut run = FrameworkLoop::start(Setup {
        namespace: NS,
        deployment: DEPLOYMENT,
        name: "sidekiq-drain",
        program: sk::worker_program(&queue, 1, Duration::from_secs(3)),
        kill_grace: Duration::from_secs(5),
        pod_ips: None,
        queue_uri: sk::queue_uri(&queue, ""),
        max_replicas: 2,
        worker_signal: None,
        idle_window: 5,
        scale_down_delay: 5,
        flags: &flags,
    })
    .await;
    // One long job, one short: two pods, then the short job's pod is the victim.
    let ids = sk::push(&queue, &ledger, &[LONG_JOB, 1.0]);

    let deadline = Instant::now() + Duration::from_secs(90);
    let victim = loop {
        if let Some(pod) = annotated(&run).into_iter().next() {
            break pod;
        }
        assert!(
            Instant::now() < deadline,
            "no drain started; log:\n{}",
            run.controller.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    run.controller.kill();
    let busy_pod = sk::ledger(&ledger)
        .into_iter()
        .find(|r| r.event == "start" && r.job == ids[0])
        .map(|r| r.pod)
        .expect("the long job started");
    assert_ne!(victim, busy_pod, "the pod running the long job was chosen");

    // The restarted controller: same flags, no memory of the drain.
    let idle = "--idle-window=5";
    let delay = "--scale-down-delay-after-last-scale-activity=5";
    run.controller = ControllerProcess::start(
        &run.server,
        &run.dir,
        "sidekiq-drain-2",
        &[idle, delay, "--log-level=info", DRAIN_TIMEOUT],
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while run
        .runner
        .records()
        .iter()
        .all(|w| w.pod != victim || w.terminated_at.is_none())
    {
        assert!(
            Instant::now() < deadline,
            "the victim was never removed; log:\n{}",
            run.controller.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let records = run.runner.records();
    let busy = records
        .iter()
        .find(|w| w.pod == busy_pod)
        .expect("the busy pod");
    assert!(
        busy.terminated_at.is_none(),
        "the pod running the long job was removed"
    );
    let log = std::fs::read_to_string(run.dir.join("workers").join(format!("{victim}.log")))
        .unwrap_or_default();
    let quiet = log.find("Received TSTP");
    let shutdown = log.find("Shutting down");
    assert!(
        matches!((quiet, shutdown), (Some(q), Some(s)) if q < s),
        "the victim was not quieted before its SIGTERM: {log}"
    );
    let took_over = [Gvr::EVENTS, Gvr::CORE_EVENTS].iter().any(|gvr| {
        run.server.list(gvr, Some(NS)).iter().any(|e| {
            let text = e["note"]
                .as_str()
                .or(e["message"].as_str())
                .unwrap_or_default();
            text.contains("cannot take work again; draining them to the end")
        })
    });
    assert!(
        took_over,
        "the restarted controller did not take the drain over:\n{}",
        run.controller.log_text()
    );
    assert!(event_reasons(&run.server, NS, DEPLOYMENT).contains(&"Drained".to_string()));

    // The long job runs to its end on its pod, then the pool goes back to 0.
    let seen = run
        .until_at_rest(
            &ids,
            || sk::ledger(&ledger),
            Duration::from_secs(5),
            Instant::now() + Duration::from_secs(120),
        )
        .await;
    let out = run.finish(sk::ledger(&ledger), seen);
    out.assert_each_ran_once(&ids);
    out.assert_none_killed();
    out.assert_none_stopped_busy();
    sk::delete(&[format!("queue:{queue}"), ledger]);
    out.remove_logs();
}
