//! Plans with drain before removal: a scale-in first drains its victims (held, 1 s
//! rechecks), then removes exactly the drained ones; a reversal or a pause resumes them;
//! pods left draining by an earlier run are resumed before anything is decided.

use std::time::Duration;

use jiff::SignedDuration;
use serde_json::json;

use super::super::drain::{DRAINED_COST, Drain, DrainChannel, Remember, Victim};
use super::super::observed::{CELERY_EVENTS, DrainObserved, WorkersObserved};
use super::super::plan::{DRAIN_RECHECK, PodCost};
use super::super::plan_drain::{DRAIN_CANCELLED, DRAIN_STARTED, DRAINED, DRAINING};
use super::super::pods::{ClassifiedPod, PodView, PodWork};
use super::*;
use crate::queue::Credentials;
use crate::scaler::WorkerActivity;
use crate::workers::WorkerSeen;
use crate::workers::drain::DrainVia;

fn pod(name: &str, draining: bool) -> ClassifiedPod {
    ClassifiedPod {
        pod: PodView {
            name: name.to_string(),
            draining: draining.then(|| "2026-12-03T10:00:30Z".to_string()),
            grace_seconds: Some(20),
            ..PodView::default()
        },
        work: PodWork::Idle,
    }
}

fn seen(pod: &str) -> WorkerSeen {
    WorkerSeen {
        hostname: format!("celery@{pod}"),
        active: 0,
        last_busy: None,
        freq: Duration::from_secs(2),
        processed: 0,
        busy_seconds: 0.0,
        first_seen: now(),
    }
}

/// Two idle pods with a reporting worker each; `annotated` carry the draining annotation.
fn two_idle(annotated: &[&str]) -> WorkersObserved {
    let names = ["worker-a", "worker-b"];
    WorkersObserved {
        activity: Some(WorkerActivity {
            idle: 2,
            ..WorkerActivity::default()
        }),
        pods: names
            .iter()
            .map(|n| pod(n, annotated.contains(n)))
            .collect(),
        message: None,
        recheck: false,
        warming_up: false,
        source: CELERY_EVENTS.into(),
        target_workers: names.iter().map(|n| seen(n)).collect(),
    }
}

fn channel() -> DrainChannel {
    let uri = crate::queue::QueueUri::parse(QUEUE).expect("queue");
    DrainChannel {
        source: DrainVia::Celery(
            uri.celery_events(&Credentials::default())
                .expect("Redis events"),
        ),
        queues: vec!["jobs".into()],
    }
}

/// Sidekiq's channel: irreversible, victims named by pod.
fn sidekiq_drain(live: Option<Drain>, drained: &[&str]) -> DrainObserved {
    let uri =
        crate::queue::QueueUri::parse("redis+sidekiq://127.0.0.1:6379/0/jobs").expect("queue");
    let none = Credentials::default();
    DrainObserved {
        channel: super::super::drain_observe::channel_for(&[uri], &none).expect("drainable"),
        ..drain(live, drained)
    }
}

fn sidekiq_victim(pod: &str) -> Victim {
    Victim {
        pod: pod.into(),
        nodes: vec![pod.into()],
    }
}

fn live_drain() -> Drain {
    Drain {
        victims: vec![Victim {
            pod: "worker-a".into(),
            nodes: vec!["celery@worker-a".into()],
        }],
        from: 2,
        undrainable: 0,
        deadline: now() + SignedDuration::from_secs(20),
    }
}

fn drain(live: Option<Drain>, drained: &[&str]) -> DrainObserved {
    DrainObserved {
        channel: channel(),
        live,
        removing: Vec::new(),
        drained: drained.iter().map(|s| s.to_string()).collect(),
    }
}

/// min 1: an idle, empty queue wants 1 of 2 replicas.
fn min_one() -> WorkerPodAutoScaler {
    wpa(json!({"minReplicas": 1}))
}

fn world_with(
    wpa: &WorkerPodAutoScaler,
    backlog: u64,
    workers: WorkersObserved,
    drain: DrainObserved,
) -> World {
    World {
        workers: Some(workers),
        drain: Some(drain),
        ..world(wpa, 2, fresh(backlog, 0, backlog == 0))
    }
}

fn reasons(plan: &Plan) -> Vec<&str> {
    plan.events.iter().map(|e| e.reason.as_str()).collect()
}

#[test]
fn a_scale_in_starts_a_drain_and_holds_the_scale() {
    let wpa = min_one();
    let world = world_with(&wpa, 0, two_idle(&[]), drain(None, &[]));
    let plan = plan_for(&wpa, &observed(Ok(world), scaled_ago(3600)));
    assert_eq!(plan.scale, None, "no pod goes before it is drained");
    let started = plan.drain.start.as_ref().expect("a drain starts");
    assert_eq!(started.victims, live_drain().victims, "the first idle pod");
    // The pods' grace period bounds it.
    assert_eq!(started.deadline, now() + SignedDuration::from_secs(20));
    assert_eq!(plan.drain.remember, Remember::Start(started.clone()));
    assert_eq!(plan.requeue, DRAIN_RECHECK);
    assert_eq!(plan.draining, Some(1));
    assert!(reasons(&plan).contains(&DRAIN_STARTED));
    let able = condition(&plan, "AbleToScale").expect("condition");
    assert_eq!(able.reason, DRAINING);
    assert!(able.message.contains("worker-a"), "{}", able.message);
    let status = plan.status.as_ref().expect("status");
    assert_eq!(status.workers.as_ref().map(|w| w.draining), Some(1));
    assert_eq!(
        plan.record, None,
        "the decision is made when the drain ends"
    );
}

#[test]
fn a_drain_waits_until_its_victims_hold_nothing() {
    let wpa = min_one();
    let world = world_with(
        &wpa,
        0,
        two_idle(&["worker-a"]),
        drain(Some(live_drain()), &[]),
    );
    let plan = plan_for(&wpa, &observed(Ok(world), scaled_ago(3600)));
    assert_eq!(plan.scale, None);
    assert_eq!(plan.drain.start, None);
    assert!(plan.drain.resume.is_empty(), "the victim is no orphan");
    assert_eq!(plan.drain.remember, Remember::Keep);
    assert_eq!(plan.requeue, DRAIN_RECHECK);
    assert_eq!(plan.draining, Some(1));
    let able = condition(&plan, "AbleToScale").expect("condition");
    assert_eq!(able.reason, DRAINING);
}

#[test]
fn a_drained_victim_is_removed_first() {
    let wpa = min_one();
    let world = world_with(
        &wpa,
        0,
        two_idle(&["worker-a"]),
        drain(Some(live_drain()), &["worker-a"]),
    );
    let plan = plan_for(&wpa, &observed(Ok(world), scaled_ago(3600)));
    let change = plan.scale.as_ref().expect("the scale-in");
    assert_eq!((change.from, change.to), (2, 1));
    assert!(plan.pod_costs.contains(&PodCost {
        pod: "worker-a".into(),
        cost: DRAINED_COST
    }));
    assert!(
        plan.pod_costs
            .iter()
            .all(|c| c.pod == "worker-a" || c.cost > DRAINED_COST)
    );
    assert_eq!(
        plan.drain.remember,
        Remember::Finish {
            to: 1,
            removing: vec!["worker-a".into()]
        }
    );
    assert!(plan.drain.resume.is_empty());
    assert!(reasons(&plan).contains(&DRAINED));
    assert_eq!(plan.draining, Some(0));
}

#[test]
fn backlog_returning_cancels_the_drain_and_scales_at_once() {
    let wpa = min_one();
    // 20 messages at 5 per worker: 4 replicas wanted.
    let world = world_with(
        &wpa,
        20,
        two_idle(&["worker-a"]),
        drain(Some(live_drain()), &[]),
    );
    let plan = plan_for(&wpa, &observed(Ok(world), scaled_ago(3600)));
    assert_eq!(
        plan.drain.resume,
        live_drain().victims,
        "the victim consumes again"
    );
    assert_eq!(plan.drain.remember, Remember::Clear);
    assert!(reasons(&plan).contains(&DRAIN_CANCELLED));
    let change = plan.scale.as_ref().expect("the scale-up is not delayed");
    assert_eq!((change.from, change.to), (2, 4));
}

#[test]
fn pausing_cancels_a_drain() {
    let wpa = paused(min_one());
    let world = world_with(
        &wpa,
        0,
        two_idle(&["worker-a"]),
        drain(Some(live_drain()), &[]),
    );
    let plan = plan_for(&wpa, &observed(Ok(world), scaled_ago(3600)));
    assert_eq!(plan.scale, None);
    assert_eq!(plan.drain.resume, live_drain().victims);
    assert_eq!(plan.drain.remember, Remember::Clear);
    assert_eq!(
        condition(&plan, "AbleToScale").map(|c| c.reason.as_str()),
        Some("Paused")
    );
}

#[test]
fn pods_left_draining_by_an_earlier_run_are_resumed_before_a_scale_in() {
    let wpa = min_one();
    let world = world_with(&wpa, 0, two_idle(&["worker-b"]), drain(None, &[]));
    let plan = plan_for(&wpa, &observed(Ok(world), scaled_ago(3600)));
    assert_eq!(
        plan.drain.resume,
        vec![Victim {
            pod: "worker-b".into(),
            nodes: vec!["celery@worker-b".into()]
        }]
    );
    assert_eq!(
        plan.drain.start, None,
        "decided afresh once it consumes again"
    );
    assert_eq!(plan.scale, None);
    assert_eq!(plan.requeue, DRAIN_RECHECK);
    assert!(reasons(&plan).contains(&DRAIN_CANCELLED));
    // The pods a finished drain removes are no orphans.
    let mut removing = drain(None, &[]);
    removing.removing = vec!["worker-b".into()];
    let world = world_with(&wpa, 0, two_idle(&["worker-b"]), removing);
    let plan = plan_for(&wpa, &observed(Ok(world), scaled_ago(3600)));
    assert!(plan.drain.resume.is_empty());
    assert!(plan.drain.start.is_some());
}

#[test]
fn with_the_drain_off_a_scale_in_goes_at_once() {
    let wpa = min_one();
    let drainable = world_with(&wpa, 0, two_idle(&[]), drain(None, &[]));
    let mut settings = settings();
    settings.drain.enabled = false;
    let plan = plan(&wpa, &observed(Ok(drainable), scaled_ago(3600)), &settings);
    let change = plan.scale.as_ref().expect("the scale-in");
    assert_eq!((change.from, change.to), (2, 1));
    assert_eq!(plan.drain.start, None);
    // And a WPA whose workers cannot be drained (no channel) scales as before.
    let undrainable = World {
        workers: Some(two_idle(&[])),
        ..world(&wpa, 2, fresh(0, 0, true))
    };
    let plan = plan_for(&wpa, &observed(Ok(undrainable), scaled_ago(3600)));
    assert_eq!(plan.scale.as_ref().map(|c| c.to), Some(1));
    assert_eq!(plan.draining, None);
}

#[test]
fn sidekiq_drain_names_pods_and_is_not_called_off_when_backlog_returns() {
    let wpa = min_one();
    let world = world_with(&wpa, 0, two_idle(&[]), sidekiq_drain(None, &[]));
    let plan = plan_for(&wpa, &observed(Ok(world), scaled_ago(3600)));
    let started = plan.drain.start.as_ref().expect("a drain starts");
    assert_eq!(started.victims, vec![sidekiq_victim("worker-a")]);
    assert_eq!(plan.scale, None);

    // 20 messages back: a Celery drain is called off; a quiet Sidekiq process cannot
    // take work again, so the drain goes on, and the scale waits for it.
    let live = Drain {
        victims: vec![sidekiq_victim("worker-a")],
        ..live_drain()
    };
    let world = world_with(
        &wpa,
        20,
        two_idle(&["worker-a"]),
        sidekiq_drain(Some(live.clone()), &[]),
    );
    let plan = plan_for(&wpa, &observed(Ok(world), scaled_ago(3600)));
    assert!(plan.drain.resume.is_empty(), "nothing to resume");
    assert_eq!(plan.scale, None);
    assert_eq!(plan.draining, Some(1));

    // Drained: only the victim goes (2 -> 1); the scale-up comes at the next reconcile.
    let world = world_with(
        &wpa,
        20,
        two_idle(&["worker-a"]),
        sidekiq_drain(Some(live), &["worker-a"]),
    );
    let plan = plan_for(&wpa, &observed(Ok(world), scaled_ago(3600)));
    let change = plan.scale.as_ref().expect("the victim goes");
    assert_eq!((change.from, change.to), (2, 1));
    assert!(plan.pod_costs.contains(&PodCost {
        pod: "worker-a".into(),
        cost: DRAINED_COST
    }));
    assert!(reasons(&plan).contains(&DRAINED));
}

#[test]
fn sidekiq_pods_left_draining_by_an_earlier_run_are_drained_to_the_end() {
    let wpa = min_one();
    // After a restart: worker-b is annotated; it may be quiet already, and cannot be
    // resumed. The drain is taken over (and the signal sent again).
    let world = world_with(&wpa, 0, two_idle(&["worker-b"]), sidekiq_drain(None, &[]));
    let plan = plan_for(&wpa, &observed(Ok(world), scaled_ago(3600)));
    assert!(plan.drain.resume.is_empty());
    let adopted = plan.drain.start.as_ref().expect("taken over");
    assert_eq!(adopted.victims, vec![sidekiq_victim("worker-b")]);
    assert_eq!(adopted.from, 2);
    assert_eq!(plan.drain.remember, Remember::Start(adopted.clone()));
    assert_eq!(plan.scale, None);
    assert!(reasons(&plan).contains(&DRAIN_STARTED));
}
