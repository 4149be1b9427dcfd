use std::time::Duration;

use jiff::Timestamp;

use super::*;
use crate::controller::pods::{DRAINING_ANNOTATION, PodView};

fn now() -> Timestamp {
    "2026-01-02T03:04:05Z".parse().expect("time")
}

fn at(seconds: i64) -> Timestamp {
    now() + SignedDuration::from_secs(seconds)
}

fn pod(name: &str, work: PodWork) -> ClassifiedPod {
    ClassifiedPod {
        pod: PodView {
            draining: None,
            grace_seconds: None,
            name: name.into(),
            ip: None,
            ordinal: None,
            deletion_cost: None,
        },
        work,
    }
}

fn worker(hostname: &str) -> WorkerSeen {
    WorkerSeen {
        hostname: hostname.into(),
        active: 0,
        last_busy: None,
        freq: Duration::from_secs(2),
        processed: 0,
        busy_seconds: 0.0,
        first_seen: now(),
    }
}

fn victim(pod: &str, node: &str) -> Victim {
    Victim {
        pod: pod.into(),
        nodes: vec![node.into()],
    }
}

/// Four pods: a busy, b idle, c idle (Tutor's node name), d unknown (no worker reports).
fn pods() -> Vec<ClassifiedPod> {
    vec![
        pod("w-a", PodWork::Busy { tasks: 1 }),
        pod("w-b", PodWork::Idle),
        pod("w-c", PodWork::Idle),
        pod("w-d", PodWork::Unknown),
    ]
}

fn workers() -> Vec<WorkerSeen> {
    vec![
        worker("celery@w-a"),
        worker("celery@w-b"),
        worker("celery@edx.lms.core.default.w-c"),
    ]
}

fn draining(victims: Vec<Victim>, undrainable: i32) -> Drain {
    Drain {
        victims,
        from: 4,
        undrainable,
        deadline: at(30),
    }
}

struct Case<'a> {
    name: &'a str,
    drain: Option<Drain>,
    current: i32,
    desired: i32,
    drained: &'a [&'a str],
    now: Timestamp,
    want: Step,
}

#[test]
fn drain_steps() {
    let b = victim("w-b", "celery@w-b");
    let c = victim("w-c", "celery@edx.lms.core.default.w-c");
    let cases = [
        Case {
            name: "no scale-in: nothing to drain",
            drain: None,
            current: 4,
            desired: 4,
            drained: &[],
            now: now(),
            want: Step::Pass,
        },
        Case {
            name: "scale-in by 1: the first idle pod is drained instead of scaling",
            drain: None,
            current: 4,
            desired: 3,
            drained: &[],
            now: now(),
            want: Step::Start(draining(vec![b.clone()], 0)),
        },
        Case {
            name: "scale-in by 3: the idle pods (Tutor names too); the unknown one as today",
            drain: None,
            current: 4,
            desired: 1,
            drained: &[],
            now: now(),
            want: Step::Start(draining(vec![b.clone(), c.clone()], 1)),
        },
        Case {
            name: "waiting while a victim still holds work",
            drain: Some(draining(vec![b.clone(), c.clone()], 0)),
            current: 4,
            desired: 2,
            drained: &["w-b"],
            now: at(10),
            want: Step::Wait,
        },
        Case {
            name: "every victim drained: scale with them",
            drain: Some(draining(vec![b.clone(), c.clone()], 0)),
            current: 4,
            desired: 2,
            drained: &["w-b", "w-c"],
            now: at(10),
            want: Step::Finish {
                to: 2,
                drained: vec![b.clone(), c.clone()],
                kept: Vec::new(),
                forced: Vec::new(),
            },
        },
        Case {
            name: "undrainable pods go too, as without drain",
            drain: Some(draining(vec![b.clone(), c.clone()], 1)),
            current: 4,
            desired: 1,
            drained: &["w-b", "w-c"],
            now: at(10),
            want: Step::Finish {
                to: 1,
                drained: vec![b.clone(), c.clone()],
                kept: Vec::new(),
                forced: Vec::new(),
            },
        },
        Case {
            name: "the decision now wants fewer pods gone: no more than that",
            drain: Some(draining(vec![b.clone(), c.clone()], 0)),
            current: 4,
            desired: 3,
            drained: &["w-b", "w-c"],
            now: at(10),
            want: Step::Finish {
                to: 3,
                drained: vec![b.clone(), c.clone()],
                kept: Vec::new(),
                forced: Vec::new(),
            },
        },
        Case {
            name: "a victim still busy at the bound is kept, the drained one goes",
            drain: Some(draining(vec![b.clone(), c.clone()], 0)),
            current: 4,
            desired: 2,
            drained: &["w-c"],
            now: at(30),
            want: Step::Finish {
                to: 3,
                drained: vec![c.clone()],
                kept: vec![b.clone()],
                forced: Vec::new(),
            },
        },
        Case {
            name: "none drained at the bound: all kept, no scale",
            drain: Some(draining(vec![b.clone()], 0)),
            current: 4,
            desired: 3,
            drained: &[],
            now: at(31),
            want: Step::Finish {
                to: 4,
                drained: Vec::new(),
                kept: vec![b.clone()],
                forced: Vec::new(),
            },
        },
        Case {
            name: "reversal: no scale-in wanted any more, the victims consume again",
            drain: Some(draining(vec![b.clone(), c.clone()], 0)),
            current: 4,
            desired: 5,
            drained: &["w-b"],
            now: at(5),
            want: Step::Cancel(vec![b.clone(), c.clone()]),
        },
        Case {
            name: "the replicas changed under the drain: start over",
            drain: Some(draining(vec![b.clone()], 0)),
            current: 3,
            desired: 2,
            drained: &["w-b"],
            now: at(5),
            want: Step::Cancel(vec![b.clone()]),
        },
    ];
    for case in cases {
        let pods = pods();
        let workers = workers();
        let drained: Vec<String> = case.drained.iter().map(|s| s.to_string()).collect();
        let got = step(&DrainInput {
            drain: case.drain.as_ref(),
            current: case.current,
            desired: case.desired,
            pods: &pods,
            workers: &workers,
            drained: &drained,
            now: case.now,
            bound: Duration::from_secs(30),
            style: DrainStyle::default(),
        });
        assert_eq!(got, case.want, "{}", case.name);
    }
}

#[test]
fn drain_is_cancelled_when_a_victim_vanished() {
    let pods: Vec<ClassifiedPod> = pods().into_iter().filter(|p| p.pod.name != "w-b").collect();
    let drain = draining(vec![victim("w-b", "celery@w-b")], 0);
    let got = step(&DrainInput {
        drain: Some(&drain),
        current: 4,
        desired: 3,
        pods: &pods,
        workers: &workers(),
        drained: &[],
        now: at(1),
        bound: Duration::from_secs(30),
        style: DrainStyle::default(),
    });
    assert_eq!(got, Step::Cancel(drain.victims.clone()));
}

#[test]
fn drain_passes_where_nothing_can_be_drained() {
    // No idle pod with a reporting worker: scale-in as today.
    let pods = vec![
        pod("w-a", PodWork::Busy { tasks: 1 }),
        pod("w-d", PodWork::Unknown),
    ];
    let input = DrainInput {
        drain: None,
        current: 2,
        desired: 1,
        pods: &pods,
        workers: &workers(),
        drained: &[],
        now: now(),
        bound: Duration::from_secs(30),
        style: DrainStyle::default(),
    };
    assert_eq!(step(&input), Step::Pass);
    // A StatefulSet removes its highest ordinals whatever the costs.
    let mut set = vec![pod("s-0", PodWork::Idle), pod("s-1", PodWork::Idle)];
    for (i, p) in set.iter_mut().enumerate() {
        p.pod.ordinal = Some(u32::try_from(i).expect("small"));
    }
    let set_workers = vec![worker("celery@s-0"), worker("celery@s-1")];
    assert_eq!(
        step(&DrainInput {
            pods: &set,
            workers: &set_workers,
            ..input
        }),
        Step::Pass
    );
}

#[test]
fn drain_restart_recovery_resumes_pods_no_live_drain_knows() {
    let annotated = vec!["w-b".to_string(), "w-c".to_string()];
    // After a restart nothing is remembered: every annotated pod is resumed.
    assert_eq!(orphans(&annotated, None), vec!["w-b", "w-c"]);
    // A live drain's own victims are not.
    let drain = draining(vec![victim("w-b", "celery@w-b")], 0);
    assert_eq!(orphans(&annotated, Some(&drain)), vec!["w-c"]);
    assert!(orphans(&[], Some(&drain)).is_empty());
}

#[test]
fn drain_drained_victims_rank_below_idle_pods() {
    // The ReplicaSet removes the lowest cost first: drained victims, and only they
    // (checked when the tests compile).
    const _: () = assert!(DRAINED_COST < crate::controller::pods::IDLE_COST);
    // practo's annotation domain, as the other annotations of this controller.
    assert!(DRAINING_ANNOTATION.starts_with("k8s.practo.dev/"));
}

/// Sidekiq's drain: victims named by pod, never called off, all removed at the end.
fn committed(
    drain: Option<&Drain>,
    current: i32,
    desired: i32,
    drained: &[&str],
    now: Timestamp,
) -> Step {
    let pods = pods();
    let drained: Vec<String> = drained.iter().map(|s| s.to_string()).collect();
    step(&DrainInput {
        drain,
        current,
        desired,
        pods: &pods,
        // Sidekiq processes are no Celery workers: victims come from the pods alone.
        workers: &[],
        drained: &drained,
        now,
        bound: Duration::from_secs(30),
        style: DrainStyle {
            irreversible: true,
            by_pod: true,
        },
    })
}

#[test]
fn drain_irreversible_names_pods_and_is_never_called_off() {
    let b = victim("w-b", "w-b");
    let c = victim("w-c", "w-c");
    assert_eq!(
        committed(None, 4, 2, &[], now()),
        Step::Start(draining(vec![b.clone(), c.clone()], 0)),
        "idle pods are the victims, named by pod"
    );
    let live = draining(vec![b.clone(), c.clone()], 0);
    assert_eq!(
        committed(Some(&live), 4, 5, &["w-b"], at(5)),
        Step::Wait,
        "reversed: still waits for the victims, which cannot consume again"
    );
    assert_eq!(
        committed(Some(&live), 4, 5, &["w-b", "w-c"], at(6)),
        Step::Finish {
            to: 2,
            drained: vec![b.clone(), c.clone()],
            kept: Vec::new(),
            forced: Vec::new(),
        },
        "reversed, all drained: only the victims go; the next reconcile scales up"
    );
    assert_eq!(
        committed(Some(&live), 4, 3, &["w-b", "w-c"], at(6)),
        Step::Finish {
            to: 2,
            drained: vec![b.clone(), c.clone()],
            kept: Vec::new(),
            forced: Vec::new(),
        },
        "the decision now wants fewer pods gone: every quiet victim goes all the same"
    );
    assert_eq!(
        committed(Some(&live), 4, 2, &["w-b"], at(30)),
        Step::Finish {
            to: 2,
            drained: vec![b.clone()],
            kept: Vec::new(),
            forced: vec![c.clone()],
        },
        "at the bound a still busy victim is removed, not kept quiet for good"
    );
    let with_unknown = draining(vec![b.clone()], 1);
    assert_eq!(
        committed(Some(&with_unknown), 4, 1, &["w-b"], at(3)),
        Step::Finish {
            to: 2,
            drained: vec![b.clone()],
            kept: Vec::new(),
            forced: Vec::new(),
        },
        "the scale-in stands: the undrainable pod goes too"
    );
    let one = draining(vec![b.clone()], 0);
    assert_eq!(
        committed(Some(&one), 3, 2, &[], at(3)),
        Step::Wait,
        "replicas changed under the drain: still committed"
    );
}
