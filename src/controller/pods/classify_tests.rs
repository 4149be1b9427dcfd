//! The classification of pods by their workers' reports.

use super::*;

fn pod(name: &str) -> PodView {
    PodView {
        draining: None,
        grace_seconds: None,
        name: name.to_string(),
        ip: None,
        ordinal: None,
        deletion_cost: None,
    }
}

fn worker(hostname: &str, active: u32, last_busy: Option<Timestamp>) -> WorkerSeen {
    WorkerSeen {
        hostname: hostname.to_string(),
        active,
        last_busy,
        freq: Duration::from_secs(2),
        processed: 0,
        busy_seconds: 0.0,
        first_seen: Timestamp::UNIX_EPOCH,
    }
}

fn at(seconds: i64) -> Timestamp {
    Timestamp::from_second(seconds).expect("timestamp")
}

#[test]
fn worker_names_map_to_pods() {
    assert!(runs_in("celery@worker-7d9-abcde", "worker-7d9-abcde"));
    assert!(runs_in(
        "celery@edx.lms.core.default.lms-worker-5f-x2k9q",
        "lms-worker-5f-x2k9q"
    ));
    assert!(runs_in("lms-worker-5f-x2k9q", "lms-worker-5f-x2k9q"));
    // A longer pod name that merely ends the same way is another pod.
    assert!(!runs_in("celery@big-worker-1", "worker-1"));
    assert!(!runs_in("celery@worker-1", "worker-10"));
    assert!(!runs_in("celery@worker-10", "worker-1"));
    assert!(!runs_in("celery@", "worker-1"));
}

#[test]
fn busy_idle_and_unknown_pods() {
    let pods = [pod("w-a"), pod("w-b"), pod("w-c"), pod("w-d")];
    let workers = [
        worker("celery@w-a", 2, Some(at(100))),
        worker("celery@w-b", 0, None),
        // Two worker processes in one pod: busy if either is.
        worker("celery@w-c", 0, None),
        worker("other@w-c", 1, Some(at(100))),
        // A worker of a pod that is gone (or of another target): ignored.
        worker("celery@w-zzz", 5, Some(at(100))),
    ];
    let (activity, classified) = classify(
        &pods,
        &workers,
        &[],
        at(100),
        Duration::from_secs(60),
        false,
    );
    let works: Vec<PodWork> = classified.iter().map(|c| c.work).collect();
    assert_eq!(
        works,
        [
            PodWork::Busy { tasks: 2 },
            PodWork::Idle,
            PodWork::Busy { tasks: 1 },
            PodWork::Unknown
        ]
    );
    assert_eq!(
        activity,
        WorkerActivity {
            busy: 2,
            idle: 1,
            unknown: 1,
            active_tasks: 3,
            recently_busy: true,
            keep: 2,
        }
    );
}

#[test]
fn a_worker_between_two_tasks_stays_busy_for_three_heartbeats() {
    let pods = [pod("w-a")];
    let window = Duration::from_secs(60);
    // Its heartbeat at 100 s said 0 tasks; its last task was reported at 96 s.
    let workers = [worker("celery@w-a", 0, Some(at(96)))];
    let (activity, classified) = classify(&pods, &workers, &[], at(100), window, false);
    assert_eq!(classified[0].work, PodWork::Busy { tasks: 0 });
    assert_eq!(
        (activity.busy, activity.keep, activity.active_tasks),
        (1, 1, 0)
    );
    let (activity, classified) = classify(&pods, &workers, &[], at(102), window, false);
    assert_eq!(
        classified[0].work,
        PodWork::Idle,
        "3 x 2 s after its last task"
    );
    assert_eq!(activity.keep, 0);
}

#[test]
fn recently_busy_lasts_the_idle_window() {
    let pods = [pod("w-a")];
    let window = Duration::from_secs(60);
    let workers = [worker("celery@w-a", 0, Some(at(100)))];
    assert!(
        classify(&pods, &workers, &[], at(159), window, false)
            .0
            .recently_busy
    );
    assert!(
        !classify(&pods, &workers, &[], at(160), window, false)
            .0
            .recently_busy
    );
    let never = [worker("celery@w-a", 0, None)];
    assert!(
        !classify(&pods, &never, &[], at(100), window, false)
            .0
            .recently_busy
    );
}

#[test]
fn a_statefulset_keeps_up_to_its_highest_busy_ordinal() {
    let pods: Vec<PodView> = (0..5)
        .map(|i| PodView {
            draining: None,
            grace_seconds: None,
            ordinal: Some(i),
            ..pod(&format!("s-{i}"))
        })
        .collect();
    let workers = [worker("celery@s-1", 1, None), worker("celery@s-3", 0, None)];
    let (activity, _) = classify(&pods, &workers, &[], at(0), Duration::from_secs(60), true);
    assert_eq!((activity.busy, activity.keep), (1, 2));
    let (activity, _) = classify(&pods, &workers, &[], at(0), Duration::from_secs(60), false);
    assert_eq!(activity.keep, 1);
}

#[test]
fn costs_are_written_only_where_they_differ() {
    let classified = |cost: Option<&str>, work| ClassifiedPod {
        pod: PodView {
            draining: None,
            grace_seconds: None,
            deletion_cost: cost.map(str::to_string),
            ..pod("w")
        },
        work,
    };
    assert_eq!(
        classified(None, PodWork::Busy { tasks: 1 }).cost_change(),
        Some(BUSY_COST)
    );
    assert_eq!(
        classified(Some("1000"), PodWork::Busy { tasks: 1 }).cost_change(),
        None
    );
    assert_eq!(
        classified(Some(" 1000 "), PodWork::Busy { tasks: 3 }).cost_change(),
        None
    );
    assert_eq!(
        classified(Some("1000"), PodWork::Idle).cost_change(),
        Some(IDLE_COST)
    );
    assert_eq!(
        classified(Some("junk"), PodWork::Idle).cost_change(),
        Some(IDLE_COST)
    );
    assert_eq!(classified(Some("5"), PodWork::Unknown).cost_change(), None);
    assert_eq!(classified(None, PodWork::Unknown).cost_change(), None);
}

#[test]
fn consumer_reports_by_pod_name_or_ip() {
    let with_ip = |name: &str, ip: &str| PodView {
        draining: None,
        grace_seconds: None,
        ip: Some(ip.to_string()),
        ..pod(name)
    };
    let pods = [
        with_ip("w-a", "10.0.0.1"),
        with_ip("w-b", "10.0.0.2"),
        with_ip("w-c", "10.0.0.3"),
        with_ip("w-d", "10.0.0.4"),
    ];
    let report = |pod: Option<&str>, ip: Option<&str>, busy| ConsumerReport {
        pod: pod.map(str::to_string),
        ip: ip.map(str::to_string),
        busy,
        channel: None,
    };
    let consumers = [
        report(None, Some("10.0.0.1"), true),
        report(Some("w-b"), None, false),
        // Two channels of one pod: busy if either holds messages.
        report(None, Some("10.0.0.3"), false),
        report(None, Some("10.0.0.3"), true),
        // Another workload's consumer.
        report(None, Some("10.9.9.9"), true),
    ];
    // Celery says w-b runs a task although its consumer holds nothing (early ack).
    let workers = [worker("celery@w-b", 1, None)];
    let (activity, classified) = classify(
        &pods,
        &workers,
        &consumers,
        at(0),
        Duration::from_secs(60),
        false,
    );
    let works: Vec<PodWork> = classified.iter().map(|c| c.work).collect();
    assert_eq!(
        works,
        [
            PodWork::Busy { tasks: 0 },
            PodWork::Busy { tasks: 1 },
            PodWork::Busy { tasks: 0 },
            PodWork::Unknown
        ]
    );
    assert_eq!(
        (
            activity.busy,
            activity.idle,
            activity.unknown,
            activity.active_tasks
        ),
        (3, 0, 1, 1)
    );
    let (activity, _) = classify(
        &pods,
        &[],
        &[report(Some("w-d"), None, false)],
        at(0),
        Duration::from_secs(60),
        false,
    );
    assert_eq!((activity.busy, activity.idle, activity.unknown), (0, 1, 3));
    assert!(!activity.recently_busy);
}

/// Pods on the host network (or behind a NAT) share one IP: a consumer report by that IP
/// cannot say which of them holds the messages. Its busy consumers are counted against the
/// pods the heartbeats count busy there; only more busy consumers than that marks every
/// pod at the IP busy.
#[test]
fn consumer_reports_by_an_ip_several_pods_share() {
    let at_ip = |name: &str, ip: &str| PodView {
        draining: None,
        grace_seconds: None,
        ip: Some(ip.to_string()),
        ..pod(name)
    };
    let node = "192.168.0.7";
    let pods = [
        at_ip("w-a", node),
        at_ip("w-b", node),
        at_ip("w-c", node),
        at_ip("w-d", node),
        at_ip("w-e", "10.0.0.5"),
    ];
    let consumer = |ip: &str, busy| ConsumerReport {
        pod: None,
        ip: Some(ip.to_string()),
        busy,
        channel: None,
    };
    let heartbeats = [
        worker("celery@w-a", 1, Some(at(100))),
        worker("celery@w-b", 1, Some(at(100))),
        worker("celery@w-c", 0, None),
        worker("celery@w-d", 0, None),
    ];
    let window = Duration::from_secs(60);
    let works = |consumers: &[ConsumerReport], workers: &[WorkerSeen]| {
        let (activity, classified) = classify(&pods, workers, consumers, at(100), window, false);
        let works: Vec<PodWork> = classified.iter().map(|c| c.work).collect();
        (works, activity.keep)
    };
    let busy = |tasks| PodWork::Busy { tasks };

    // Two busy consumers at the node's IP, two pods running tasks there: accounted for, so
    // the two idle workers are idle; the pod with its own IP maps as before.
    let two_busy = [
        consumer(node, true),
        consumer(node, true),
        consumer(node, false),
        consumer(node, false),
        consumer("10.0.0.5", true),
    ];
    assert_eq!(
        works(&two_busy, &heartbeats),
        (
            vec![busy(1), busy(1), PodWork::Idle, PodWork::Idle, busy(0)],
            3
        )
    );

    // A third busy consumer (a message prefetched by a worker that has not started it):
    // it is one of the other pods, unknown which, so all of them count busy.
    let three_busy = [
        consumer(node, true),
        consumer(node, true),
        consumer(node, true),
        consumer(node, false),
    ];
    assert_eq!(
        works(&three_busy, &heartbeats),
        (
            vec![busy(1), busy(1), busy(0), busy(0), PodWork::Unknown],
            4
        )
    );

    // Without heartbeats, one busy consumer at the IP holds every pod there ...
    let one_busy = [consumer(node, true), consumer(node, false)];
    assert_eq!(
        works(&one_busy, &[]),
        (
            vec![busy(0), busy(0), busy(0), busy(0), PodWork::Unknown],
            4
        )
    );
    // ... and idle consumers at a shared IP make no pod idle: which pods they are is not known.
    let all_idle = [consumer(node, false), consumer(node, false)];
    assert_eq!(works(&all_idle, &[]), (vec![PodWork::Unknown; 5], 0));

    // A worker consuming three queues on one channel is listed once per queue: one holder.
    let on_channel = |channel: &str| ConsumerReport {
        channel: Some(channel.to_string()),
        ..consumer(node, true)
    };
    let three_queues = [
        on_channel("c1"),
        on_channel("c1"),
        on_channel("c1"),
        on_channel("c2"),
    ];
    assert_eq!(
        works(&three_queues, &heartbeats),
        (
            vec![
                busy(1),
                busy(1),
                PodWork::Idle,
                PodWork::Idle,
                PodWork::Unknown
            ],
            2
        )
    );
}
