//! Closed loops with real Celery workers as Pods (tests/it/support/closed_loop): the
//! controller binary, the API double running the Deployment's Pods, one Celery worker per
//! Pod, stopped as a kubelet stops it. These check outcomes a user sees over a whole run.

use crate::support;

use std::time::Duration;

use support::apiserver::PodIps;
use support::brokers::redis_port;
use support::closed_loop::load::Load;
use support::closed_loop::{self, Case, CeleryBroker, Layout, Outcome, Sizing};

/// Issue 23's scenario on Tutor's three LMS queues as a new install meets them (nothing
/// declared yet, RabbitMQ in a vhost of its own with `?management=`): 5 tasks of 60 s among
/// 45 of 2 s, min 0, max 10, 5 per worker, grace 10 s, scale-down delay 30 s, idle window
/// 20 s.
async fn tutor_mix(broker: CeleryBroker, acks_late: bool, pod_ips: PodIps) -> Outcome {
    let case = Case {
        broker,
        layout: Layout::TutorLms,
        acks_late,
        signal: "Auto",
        load: Load::mixed(5, 60.0, 45, 2.0),
        grace: Duration::from_secs(10),
        timeout: Duration::from_secs(300),
        redis_port: redis_port(),
        pod_ips,
        sizing: Sizing::default(),
        start_delay: Duration::ZERO,
        flags: closed_loop::Flags::ShortDelays,
        drain: true,
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let outcome = closed_loop::run(case, dir.path())
        .await
        .expect("a closed-loop run");
    let f = &outcome.figures;
    eprintln!(
        "{broker:?} acks_late={acks_late} {pod_ips:?}: replicas {}; first scale-in {:?}; long tasks ended \
         {:?}; worker-seconds {:.0}; waits p50 {:?} max {:?}; reasons {:?}; logs in {}",
        outcome.path,
        f.first_scale_in,
        f.long_tasks_end,
        f.worker_seconds,
        f.wait(0.5),
        f.wait(1.0),
        outcome.reasons,
        dir.path().display()
    );
    // Keep the logs for a look (the temp dir is not removed).
    let _ = dir.keep();
    outcome
}

/// Every task ran to its end, no busy worker got SIGTERM, the pool came back to zero, the
/// pool shrank to the busy workers while the long tasks still ran, and the controller
/// logged no ERROR on the way.
fn assert_parity(outcome: &Outcome) {
    let f = &outcome.figures;
    let context = format!(
        "{} ({}, acks_late {}): replicas {}; reasons {:?}; first scale-in {:?}; long tasks \
         ended {:?}",
        outcome.case.broker.label(),
        outcome.case.setup_label(),
        outcome.case.acks_late,
        outcome.path,
        outcome.reasons,
        f.first_scale_in,
        f.long_tasks_end
    );
    assert_eq!(f.tally.completed, f.sent, "{:?}; {context}", f.tally);
    assert_eq!(f.sigterm_busy, 0, "a busy worker got SIGTERM; {context}");
    assert_eq!(f.runs_cut, 0, "a run was cut; {context}");
    assert_eq!(outcome.stuck_at, None, "not back at zero; {context}");
    // The scale-down delay (30 s) allows it about 40 s before the long tasks end.
    assert!(
        f.scale_in_lead().is_some_and(|lead| lead >= 20.0),
        "no scale-in well before the long tasks ended; {context}"
    );
    assert!(
        outcome.error_lines.is_empty(),
        "ERROR lines: {:#?}",
        outcome.error_lines
    );
}

/// The three runs at once (each has its own vhost, API double, controller and workers):
/// they mostly wait on their tasks, so together they take the time of one.
/// - Pods that RabbitMQ sees at one shared address (host networking, a NAT), in both ack
///   modes: a busy consumer's report cannot say which Pod it is, and used to hold every Pod
///   at that address (issue 23: 10 Pods until the long tasks ended);
/// - each Pod at its own IP, as in a cluster: the consumer reports name the Pods.
#[tokio::test(flavor = "multi_thread")]
async fn rabbitmq_scales_in_to_the_busy_pods_while_long_tasks_run() {
    let (shared_early, shared_late, own_early) = tokio::join!(
        tutor_mix(CeleryBroker::Rabbitmq, false, PodIps::Shared),
        tutor_mix(CeleryBroker::Rabbitmq, true, PodIps::Shared),
        tutor_mix(CeleryBroker::Rabbitmq, false, PodIps::Loopback),
    );
    for outcome in [&shared_early, &shared_late, &own_early] {
        assert_parity(outcome);
    }
}

/// `maxWaitSeconds` with real Celery workers on Redis (late ack, prefetch 1, one slot),
/// Pods whose worker starts 5 s after them, and a Poisson stream that speeds up and slows
/// down: the controller learns the task time, arrivals and start-up from the heartbeats,
/// says so in `status.wait`, and once learned keeps the waits within the target.
#[tokio::test(flavor = "multi_thread")]
async fn redis_max_wait_learns_and_keeps_waits_within_the_target() {
    let case = Case {
        broker: CeleryBroker::Redis,
        layout: Layout::OneQueue,
        acks_late: true,
        signal: "Auto",
        load: Load::poisson(21, &[(0.6, 50.0), (1.5, 40.0), (0.3, 30.0)], 2.0, 4.0),
        grace: Duration::from_secs(30),
        timeout: Duration::from_secs(420),
        redis_port: redis_port(),
        pod_ips: PodIps::Cluster,
        sizing: Sizing {
            target_messages_per_worker: 10,
            max_wait_seconds: Some(30),
            max_replicas: 12,
        },
        start_delay: Duration::from_secs(5),
        flags: closed_loop::Flags::ShortDelays,
        drain: true,
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let outcome = closed_loop::run(case, dir.path())
        .await
        .expect("a closed-loop run");
    let f = &outcome.figures;
    let learned_at = outcome.wait_learned_at;
    let after: Vec<f64> = f
        .task_waits
        .iter()
        .filter(|(sent, _)| learned_at.is_some_and(|at| *sent >= at))
        .map(|(_, wait)| *wait)
        .collect();
    let mut sorted = after.clone();
    sorted.sort_by(f64::total_cmp);
    let p95 = sorted
        .get(((sorted.len() as f64 * 0.95).ceil() as usize).saturating_sub(1))
        .copied();
    let context = format!(
        "replicas {}; reasons {:?}; learned at {learned_at:?}; last status.wait {:?}; waits \
         after learning: {} tasks, p95 {p95:?}, max {:?}; worker-seconds {:.0}; logs in {}",
        outcome.path,
        outcome.reasons,
        outcome.last_wait_status,
        after.len(),
        sorted.last(),
        f.worker_seconds,
        dir.path().display()
    );
    eprintln!("{context}");
    let _ = dir.keep();
    assert_eq!(f.tally.completed, f.sent, "{:?}; {context}", f.tally);
    assert_eq!(f.runs_cut, 0, "{context}");
    assert!(
        learned_at.is_some_and(|at| at < 100.0),
        "not learned in time; {context}"
    );
    let wait = outcome.last_wait_status.as_ref().expect("status.wait");
    assert_eq!(wait["mode"], "MaxWait", "{context}");
    let task_seconds = wait["taskSeconds"].as_f64().unwrap_or_default();
    assert!(
        (1.5..=5.0).contains(&task_seconds),
        "task time {task_seconds}; {context}"
    );
    assert!(
        wait["startupSeconds"]
            .as_i64()
            .is_some_and(|s| (4..=30).contains(&s)),
        "{context}"
    );
    assert!(after.len() >= 20, "{context}");
    assert!(p95.is_some_and(|p| p <= 30.0), "{context}");
    assert!(
        outcome
            .reasons
            .iter()
            .any(|r| r == "ScaleUpForWait" || r == "WithinWaitTarget"),
        "{context}"
    );
}
