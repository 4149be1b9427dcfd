//! The wait rule: hand-worked cases, the properties it promises, and the decision around it.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use proptest::prelude::*;

use super::*;
use crate::crd::WorkerPodAutoScalerSpec;

fn model(arrivals: f64, task_seconds: f64, slots: u32, startup: f64) -> WaitModel {
    WaitModel {
        arrivals_short: arrivals,
        arrivals_long: arrivals,
        task_seconds,
        slots,
        startup_seconds: startup,
    }
}

fn state(waiting: u64, running: u64, ready: u32) -> WaitState {
    WaitState {
        waiting,
        held: 0,
        running,
        ready_pods: ready,
        starting: Vec::new(),
    }
}

const W30: Duration = Duration::from_secs(30);

#[test]
fn a_steady_stream_gets_its_erlang_count_and_a_hold_of_its_startup() {
    // 3 tasks/s of 5 s on one slot per pod: 15 pods' worth of work.
    let sizing = size(
        &model(3.0, 5.0, 1, 10.0),
        &state(0, 15, 16),
        W30,
        &WaitTuning::default(),
    );
    assert!((16..=18).contains(&sizing.up), "{sizing:?}");
    assert!(sizing.keep >= sizing.up, "{sizing:?}");
    assert_eq!(sizing.binding, Binding::Stream);
    assert_eq!(sizing.hold, Duration::from_secs(10));
    assert!(!sizing.startup_exceeds_target);
    // The hold is the start-up when longer than the 10 s floor.
    let slow = size(
        &model(3.0, 5.0, 1, 25.0),
        &state(0, 15, 16),
        W30,
        &WaitTuning::default(),
    );
    assert_eq!(slow.hold, Duration::from_secs(25));
}

#[test]
fn without_the_stream_term_only_the_backlog_and_running_tasks_size_the_pool() {
    let backlog_only = WaitTuning {
        stream: false,
        ..WaitTuning::default()
    };
    // The steady stream above, nothing waiting: no pod for the stream itself, but the 15
    // running tasks keep their pods.
    let steady = size(
        &model(3.0, 5.0, 1, 10.0),
        &state(0, 15, 16),
        W30,
        &backlog_only,
    );
    assert_eq!(steady.up, 0, "{steady:?}");
    assert_eq!(steady.keep, 15, "{steady:?}");
    assert_eq!(steady.binding, Binding::Running);
    // 100 tasks waiting from zero: the backlog needs 22 pods either way (the stream of
    // 3/s adds nothing the backlog's pods do not cover).
    let m = model(3.0, 5.0, 1, 10.0);
    let from_zero = state(100, 0, 0);
    let without = size(&m, &from_zero, W30, &backlog_only);
    assert_eq!(without.binding, Binding::Backlog);
    assert_eq!(without.up, 22, "{without:?}");
    assert!(without.up <= size(&m, &from_zero, W30, &WaitTuning::default()).up);
}

#[test]
fn a_backlog_from_zero_is_started_within_the_target() {
    // 100 tasks of 5 s, no pods, start-up 10 s, target 30 s (28 after the reaction): a new
    // pod starts 1 task at once and 0.2 a second for 18 s, 4.6 tasks: 22 pods.
    let m = model(0.0, 5.0, 1, 10.0);
    let s = state(100, 0, 0);
    let sizing = size(&m, &s, W30, &WaitTuning::default());
    assert_eq!(sizing.up, 22, "{sizing:?}");
    assert_eq!(sizing.binding, Binding::Backlog);
    let wait = predicted_wait(&m, &s, sizing.up).expect("finite");
    assert!(wait <= 28.0, "{wait}");
    assert!(predicted_wait(&m, &s, sizing.up - 1).expect("finite") > 28.0);
    // Pods already starting are credited, not started again.
    let starting = WaitState {
        starting: vec![2.0; 10],
        ..s.clone()
    };
    assert!(size(&m, &starting, W30, &WaitTuning::default()).up <= 22);
}

#[test]
fn nothing_to_do_keeps_nothing_and_work_in_flight_keeps_one() {
    let sizing = size(
        &model(0.0, 5.0, 1, 10.0),
        &state(0, 0, 3),
        W30,
        &WaitTuning::default(),
    );
    assert_eq!(
        (sizing.up, sizing.keep, sizing.binding),
        (0, 0, Binding::Zero)
    );
    let held = WaitState {
        held: 2,
        ..state(0, 0, 1)
    };
    assert_eq!(
        size(
            &model(0.0, 5.0, 1, 10.0),
            &held,
            W30,
            &WaitTuning::default()
        )
        .keep,
        1
    );
    // Running tasks keep their slots: 7 tasks on pods of 4 slots need 2 pods.
    let running = size(
        &model(0.0, 5.0, 4, 10.0),
        &state(0, 7, 3),
        W30,
        &WaitTuning::default(),
    );
    assert_eq!((running.keep, running.binding), (2, Binding::Running));
}

#[test]
fn rare_tasks_start_their_own_pod() {
    // One task a minute: a pod per task (10 + 5 + 15 s) costs less than one kept.
    let rare = size(
        &model(1.0 / 60.0, 5.0, 1, 10.0),
        &state(0, 0, 1),
        W30,
        &WaitTuning::default(),
    );
    assert_eq!(rare.keep, 0, "{rare:?}");
    // ... but not when the start-up alone exceeds the target.
    let slow = size(
        &model(1.0 / 60.0, 5.0, 1, 40.0),
        &state(0, 0, 1),
        W30,
        &WaitTuning::default(),
    );
    assert!(slow.keep >= 1 && slow.startup_exceeds_target, "{slow:?}");
}

#[test]
fn prefetched_tasks_wait_behind_their_workers() {
    // Issue 21's case: 14 held by 4 busy workers, tasks of about 22 s: about 88 s.
    let wait = held_wait(&model(0.1, 22.0, 1, 10.0), 14, 4);
    assert!((85.0..=90.0).contains(&wait), "{wait}");
    assert_eq!(held_wait(&model(0.1, 22.0, 1, 10.0), 0, 4), 0.0);
}

#[test]
fn an_overloaded_pool_has_no_finite_wait() {
    assert_eq!(
        predicted_wait(&model(3.0, 5.0, 1, 10.0), &state(0, 0, 10), 10),
        None
    );
    assert!(predicted_wait(&model(3.0, 5.0, 1, 10.0), &state(0, 0, 20), 20).is_some());
}

fn policy(min: i32, max: i32) -> Policy {
    let spec: WorkerPodAutoScalerSpec = serde_json::from_value(serde_json::json!({
        "minReplicas": min, "maxReplicas": max, "targetMessagesPerWorker": 5,
        "queueURI": "redis://127.0.0.1:6379/0/q", "deploymentName": "w"
    }))
    .expect("spec");
    Policy::from_spec(&spec, &ScalerSettings::default()).expect("policy")
}

fn t(seconds: i64) -> Timestamp {
    Timestamp::UNIX_EPOCH + SignedDuration::from_secs(1_700_000_000 + seconds)
}

fn sizing(up: u64, keep: u64) -> Sizing {
    Sizing {
        up,
        keep,
        binding: Binding::Backlog,
        hold: Duration::from_secs(15),
        startup_exceeds_target: false,
    }
}

fn decide(s: &Sizing, current: i32, now: Timestamp, history: &History) -> Decision {
    decide_with_wait(
        &policy(0, 20),
        &QueueSnapshot::default(),
        None,
        Some(s),
        current,
        now,
        history,
        &ScalerSettings::default(),
    )
}

#[test]
fn scale_up_at_once_scale_down_after_the_hold() {
    let mut history = History::default();
    let up = decide(&sizing(8, 8), 2, t(0), &history);
    assert_eq!((up.desired, up.reason), (8, Reason::ScaleUpForWait));
    history.record(&up, 2, t(0));
    // Within the band: hold, no matter the (600 s) scale-down delay flag.
    let within = decide(&sizing(6, 9), 8, t(5), &history);
    assert_eq!(
        (within.desired, within.reason),
        (8, Reason::WithinWaitTarget)
    );
    history.record(&within, 8, t(5));
    // Fewer would do, but only for 5 s: held.
    let held = decide(&sizing(3, 4), 8, t(10), &history);
    assert_eq!((held.desired, held.reason), (8, Reason::WaitScaleDownHeld));
    history.record(&held, 8, t(10));
    // 15 s after the count was last needed: down to the highest keep since.
    let down = decide(&sizing(3, 4), 8, t(21), &history);
    assert_eq!((down.desired, down.reason), (4, Reason::ScaleDownForWait));
}

#[test]
fn bounds_and_busy_workers_come_last() {
    let history = History::default();
    let over = decide_with_wait(
        &policy(0, 5),
        &QueueSnapshot::default(),
        None,
        Some(&sizing(9, 9)),
        2,
        t(0),
        &history,
        &ScalerSettings::default(),
    );
    assert_eq!((over.desired, over.limited), (5, true));
    let busy = WorkerActivity {
        busy: 3,
        keep: 3,
        ..WorkerActivity::default()
    };
    let down = decide_with_wait(
        &policy(0, 20),
        &QueueSnapshot::default(),
        Some(&busy),
        Some(&sizing(0, 0)),
        6,
        t(100),
        &history,
        &ScalerSettings::default(),
    );
    assert_eq!((down.desired, down.reason), (3, Reason::HoldBusyWorkers));
    // Without a sizing the decision is practo's.
    let practo = decide_with_wait(
        &policy(0, 20),
        &QueueSnapshot {
            visible: 12,
            ..QueueSnapshot::default()
        },
        None,
        None,
        0,
        t(0),
        &history,
        &ScalerSettings::default(),
    );
    assert_eq!(
        (practo.desired, practo.reason),
        (3, Reason::ScaleUpFromZero)
    );
}

fn arb_model() -> impl Strategy<Value = WaitModel> {
    (
        0.0..20.0f64,
        0.0..20.0f64,
        0.1..120.0f64,
        1u32..8,
        0.0..90.0f64,
    )
        .prop_map(|(short, long, task_seconds, slots, startup)| WaitModel {
            arrivals_short: short,
            arrivals_long: long,
            task_seconds,
            slots,
            startup_seconds: startup,
        })
}

fn arb_state() -> impl Strategy<Value = WaitState> {
    (
        0u64..2000,
        0u64..50,
        0u64..100,
        0u32..40,
        proptest::collection::vec(0.0..60.0f64, 0..5),
    )
        .prop_map(|(waiting, held, running, ready_pods, starting)| WaitState {
            waiting,
            held,
            running,
            ready_pods,
            starting,
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn up_never_exceeds_keep(m in arb_model(), s in arb_state(), w in 1u64..600) {
        let sizing = size(&m, &s, Duration::from_secs(w), &WaitTuning::default());
        prop_assert!(sizing.up <= sizing.keep, "{sizing:?}");
    }

    #[test]
    fn more_backlog_or_arrivals_never_need_fewer_pods(
        m in arb_model(), s in arb_state(), w in 1u64..600, more in 1u64..500, faster in 0.0..5.0f64,
    ) {
        let tuning = WaitTuning::default();
        let w = Duration::from_secs(w);
        let base = size(&m, &s, w, &tuning);
        let backlog = size(&m, &WaitState { waiting: s.waiting + more, ..s.clone() }, w, &tuning);
        prop_assert!(backlog.up >= base.up && backlog.keep >= base.keep);
        let busier = WaitModel {
            arrivals_short: m.arrivals_short + faster,
            arrivals_long: m.arrivals_long + faster,
            ..m
        };
        let stream = size(&busier, &s, w, &tuning);
        // Leaving the sparse regime can only add pods; inside it no pod is kept for the
        // stream either way.
        prop_assert!(stream.up >= base.up && stream.keep >= base.keep, "{base:?} {stream:?}");
    }

    #[test]
    fn running_tasks_keep_their_slots(m in arb_model(), s in arb_state(), w in 1u64..600) {
        let sizing = size(&m, &s, Duration::from_secs(w), &WaitTuning::default());
        prop_assert!(sizing.keep >= s.running.div_ceil(u64::from(m.slots)));
        if s.waiting + s.held + s.running > 0 {
            prop_assert!(sizing.keep >= 1);
        }
    }

    #[test]
    fn the_decision_stays_in_bounds_and_above_the_busy_pods(
        up in 0u64..40, extra in 0u64..10, current in 0i32..30, busy in 0u32..30,
        min in 0i32..5, span in 0i32..25, since in 0i64..60,
    ) {
        let max = min + span.max(1);
        let workers = WorkerActivity { busy, keep: busy, ..WorkerActivity::default() };
        let mut history = History::default();
        let first = decide_with_wait(&policy(min, max), &QueueSnapshot::default(), Some(&workers),
            Some(&sizing(up, up + extra)), current, t(0), &history, &ScalerSettings::default());
        history.record(&first, current, t(0));
        let d = decide_with_wait(&policy(min, max), &QueueSnapshot::default(), Some(&workers),
            Some(&sizing(up / 2, (up + extra) / 2)), first.desired, t(since), &history,
            &ScalerSettings::default());
        prop_assert!(d.desired <= max.max(first.desired));
        prop_assert!(d.desired >= min.min(first.desired));
        let floor = i32::try_from(busy).unwrap_or(i32::MAX).min(first.desired);
        prop_assert!(d.desired >= floor.min(max), "{d:?}");
    }

    #[test]
    fn a_steady_stream_does_not_flap(rate in 0.05..10.0f64, task in 0.5..30.0f64, slots in 1u32..4) {
        // The same inputs, decided again and again at the count they gave, stay there.
        let m = model(rate, task, slots, 10.0);
        let tuning = WaitTuning::default();
        let mut current = 0i32;
        let mut history = History::default();
        let mut changes = 0;
        for step in 0..120i64 {
            let pods = u32::try_from(current).unwrap_or(0);
            let running = ((rate * task).round() as u64).min(u64::from(pods) * u64::from(slots));
            let s = state(0, running, pods);
            let sizing = size(&m, &s, W30, &tuning);
            let d = decide_with_wait(&policy(0, 1000), &QueueSnapshot::default(), None,
                Some(&sizing), current, t(step * 2), &history, &ScalerSettings::default());
            history.record(&d, current, t(step * 2));
            if d.desired != current {
                changes += 1;
                current = d.desired;
            }
        }
        prop_assert!(changes <= 2, "{changes} changes on a steady stream");
    }

    #[test]
    fn nonsense_never_panics(
        short in proptest::num::f64::ANY, task in proptest::num::f64::ANY,
        startup in proptest::num::f64::ANY, waiting in proptest::num::u64::ANY,
        running in proptest::num::u64::ANY, slots in proptest::num::u32::ANY, w in 0u64..100_000,
    ) {
        let m = WaitModel { arrivals_short: short, arrivals_long: short, task_seconds: task,
            slots, startup_seconds: startup };
        let s = WaitState { waiting, running, ..WaitState::default() };
        let sizing = size(&m, &s, Duration::from_secs(w), &WaitTuning::default());
        let _ = predicted_wait(&m, &s, sizing.up);
        let _ = held_wait(&m, waiting, slots);
    }
}
