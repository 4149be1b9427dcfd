//! Table tests of the practo path (no `behavior`). Every expected value is worked out by hand
//! from practo v1.6's GetDesiredWorkers / convertDesiredReplicasWithRules / canScaleDown; the
//! arithmetic is in the comment of each row.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use super::*;

fn t(s: i64) -> Timestamp {
    Timestamp::UNIX_EPOCH + SignedDuration::from_secs(1_700_000_000 + s)
}

fn policy(min: i32, max: i32, target: i32) -> Policy {
    Policy {
        max_wait: None,
        min,
        max,
        target,
        seconds_to_process_one_job: 0.0,
        max_disruption: MaxDisruption::Percent(100),
        behavior: None,
    }
}

fn queue(visible: u64, in_flight: u64) -> QueueSnapshot {
    QueueSnapshot {
        visible,
        in_flight,
        sent_per_minute: 0.0,
        idle: false,
    }
}

struct Row {
    name: &'static str,
    policy: Policy,
    queue: QueueSnapshot,
    current: i32,
    desired: i32,
    reason: Reason,
    limited: bool,
}

fn row(
    name: &'static str,
    policy: Policy,
    queue: QueueSnapshot,
    current: i32,
    (desired, reason, limited): (i32, Reason, bool),
) -> Row {
    Row {
        name,
        policy,
        queue,
        current,
        desired,
        reason,
        limited,
    }
}

fn with_md(mut p: Policy, md: MaxDisruption) -> Policy {
    p.max_disruption = md;
    p
}

fn with_seconds(mut p: Policy, seconds: f64) -> Policy {
    p.seconds_to_process_one_job = seconds;
    p
}

fn rate(mut q: QueueSnapshot, sent_per_minute: f64) -> QueueSnapshot {
    q.sent_per_minute = sent_per_minute;
    q
}

fn idle(mut q: QueueSnapshot) -> QueueSnapshot {
    q.idle = true;
    q
}

fn check(rows: Vec<Row>) {
    let settings = ScalerSettings::default();
    // No last scale time: no scale-down delay, so these rows test GetDesiredWorkers alone.
    let history = History::default();
    for r in rows {
        let d = decide(&r.policy, &r.queue, r.current, t(0), &history, &settings);
        assert_eq!(
            (d.desired, d.reason, d.limited),
            (r.desired, r.reason, r.limited),
            "row {}",
            r.name
        );
        assert_eq!(d.recommendation, d.desired, "row {}", r.name);
    }
}

#[test]
fn from_zero_workers() {
    use MaxDisruption::*;
    use Reason::*;
    check(vec![
        // ceil(25 / 10) = 3; clamp [0, 10] -> 3
        row(
            "backlog",
            policy(0, 10, 10),
            queue(25, 0),
            0,
            (3, ScaleUpFromZero, false),
        ),
        // backlog = 0 + 3 in flight; ceil(3 / 10) = 1
        row(
            "in flight only",
            policy(0, 10, 10),
            queue(0, 3),
            0,
            (1, ScaleUpFromZero, false),
        ),
        // ceil(0 / 10) = 0; clamp [0, 10] -> 0
        row(
            "nothing",
            policy(0, 10, 10),
            queue(0, 0),
            0,
            (0, NoChange, false),
        ),
        // ceil(0 / 10) = 0; clamp [2, 10] -> 2 (even when idle: current == 0 comes first)
        row(
            "min above zero",
            policy(2, 10, 10),
            idle(queue(0, 0)),
            0,
            (2, BelowMin, true),
        ),
        // ceil(1000 / 10) = 100; clamp [0, 5] -> 5
        row(
            "above max",
            policy(0, 5, 10),
            queue(1000, 0),
            0,
            (5, ScaleUpFromZero, true),
        ),
        // maxDisruption is irrelevant when scaling up: current - desired = -3 <= 0
        row(
            "zero disruption",
            with_md(policy(0, 10, 10), Percent(0)),
            queue(30, 0),
            0,
            (3, ScaleUpFromZero, false),
        ),
        // current < 0 is read as 0: ceil(5 / 10) = 1
        row(
            "negative current",
            policy(0, 10, 10),
            queue(5, 0),
            -4,
            (1, ScaleUpFromZero, false),
        ),
    ]);
}

#[test]
fn backlog_and_tolerance() {
    use MaxDisruption::*;
    use Reason::*;
    check(vec![
        // ceil(250 / 10) = 25; |25 - 10| / 10 = 1.5 > 0.1 -> 25
        row(
            "up",
            policy(1, 50, 10),
            queue(200, 50),
            10,
            (25, ScaleUpBacklog, false),
        ),
        // ceil(110 / 10) = 11; |11 - 10| / 10 = 0.1 <= 0.1 -> keep 10
        row(
            "exactly +10%",
            policy(1, 50, 10),
            queue(110, 0),
            10,
            (10, WithinTolerance, false),
        ),
        // ceil(111 / 10) = 12; |12 - 10| / 10 = 0.2 > 0.1 -> 12
        row(
            "just above +10%",
            policy(1, 50, 10),
            queue(111, 0),
            10,
            (12, ScaleUpBacklog, false),
        ),
        // ceil(90 / 10) = 9; |9 - 10| / 10 = 0.1 -> keep 10
        row(
            "exactly -10%",
            policy(1, 50, 10),
            queue(90, 0),
            10,
            (10, WithinTolerance, false),
        ),
        // ceil(80 / 10) = 8; 0.2 > 0.1 -> 8; 10 - 8 = 2 <= 10 (100%) -> 8
        row(
            "just below -10%",
            policy(1, 50, 10),
            queue(80, 0),
            10,
            (8, ScaleDownBacklog, false),
        ),
        // ceil(220 / 10) = 22; |22 - 20| / 20 = 0.1 -> keep 20
        row(
            "exactly 10% of 20",
            policy(1, 50, 10),
            queue(220, 0),
            20,
            (20, WithinTolerance, false),
        ),
        // ceil(221 / 10) = 23; 3 / 20 = 0.15 > 0.1 -> 23
        row(
            "15% of 20",
            policy(1, 50, 10),
            queue(221, 0),
            20,
            (23, ScaleUpBacklog, false),
        ),
        // ceil(1 / 10) = 1; |1 - 1| = 0 -> keep 1 (the backlog keeps its one worker)
        row(
            "one worker one msg",
            policy(0, 50, 10),
            queue(1, 0),
            1,
            (1, WithinTolerance, false),
        ),
        // ceil(30 / 10) = 3; 7 / 10 > 0.1 -> 3; 10 - 3 = 7 <= ceil(100% * 10) = 10 -> 3
        row(
            "down",
            policy(0, 50, 10),
            queue(30, 0),
            10,
            (3, ScaleDownBacklog, false),
        ),
        // as above, maxDisruption 2: 10 - 3 = 7 > 2 -> 10 - 2 = 8
        row(
            "down count disruption",
            with_md(policy(0, 50, 10), Count(2)),
            queue(30, 0),
            10,
            (8, ScaleDownBacklog, true),
        ),
        // maxDisruption 50 > current: 10 - 3 = 7 <= 50 -> 3
        row(
            "count larger than current",
            with_md(policy(0, 50, 10), Count(50)),
            queue(30, 0),
            10,
            (3, ScaleDownBacklog, false),
        ),
        // maxDisruption 0%: ceil(0 * 10 / 100) = 0; 7 > 0 -> 10 - 0 = 10 (no scale-down)
        row(
            "0% disruption",
            with_md(policy(0, 50, 10), Percent(0)),
            queue(30, 0),
            10,
            (10, NoChange, true),
        ),
        // maxDisruption "0": same as 0%
        row(
            "0 disruption",
            with_md(policy(0, 50, 10), Count(0)),
            queue(30, 0),
            10,
            (10, NoChange, true),
        ),
        // 25%: ceil(25 * 10 / 100) = ceil(2.5) = 3; 7 > 3 -> 10 - 3 = 7
        row(
            "percent rounds up",
            with_md(policy(0, 50, 10), Percent(25)),
            queue(30, 0),
            10,
            (7, ScaleDownBacklog, true),
        ),
        // practo's own test #89: ceil(10 / 200) = 1; |1 - 20| / 20 > 0.1; min' = max(0,
        // ceil(0.3 * 10 / 60)) = ceil(0.05) = 1; maxDisruptable = ceil(10% * 20) = 2;
        // 20 - 1 = 19 > 2 -> 18
        row(
            "practo test 89",
            with_md(with_seconds(policy(0, 20, 200), 0.3), Percent(10)),
            rate(queue(10, 0), 10.0),
            20,
            (18, ScaleDownBacklog, true),
        ),
        // current 8 > max 5: ceil(80 / 10) = 8, 0 change -> keep 8; clamp [1, 5] -> 5
        row(
            "current above max",
            policy(1, 5, 10),
            queue(80, 0),
            8,
            (5, AboveMax, true),
        ),
        // same with maxDisruption 1: 8 - 8 = 0 <= 1; clamp -> 5 (max wins over disruption)
        row(
            "above max beats disruption",
            with_md(policy(1, 5, 10), Count(1)),
            queue(80, 0),
            8,
            (5, AboveMax, true),
        ),
        // current 3 < min 5: ceil(30 / 10) = 3, keep 3; clamp [5, 10] -> 5
        row(
            "current below min",
            policy(5, 10, 10),
            queue(30, 0),
            3,
            (5, BelowMin, true),
        ),
        // ceil(1000 / 10) = 100 > 0.1 off 10; clamp [0, 20] -> 20
        row(
            "backlog above max",
            policy(0, 20, 10),
            queue(1000, 0),
            10,
            (20, ScaleUpBacklog, true),
        ),
        // ceil(100 / 10) = 10 = current (the backlog alone would keep 10); idle is ignored
        // while there is a backlog
        row(
            "idle ignored with backlog",
            policy(0, 20, 10),
            idle(queue(100, 0)),
            10,
            (10, WithinTolerance, false),
        ),
    ]);
}

#[test]
fn no_backlog() {
    use MaxDisruption::*;
    use Reason::*;
    check(vec![
        // min' = max(1, ceil(2 * 120 / 60)) = 4; convert(6, 4): 6 - 4 = 2 <= 6 -> 4
        row(
            "rate floor",
            with_seconds(policy(1, 10, 10), 2.0),
            rate(queue(0, 0), 120.0),
            6,
            (4, KeepRateFloor, false),
        ),
        // min' = 4; maxDisruption 1: 10 - 4 = 6 > 1 -> 9
        row(
            "rate floor with disruption",
            with_md(with_seconds(policy(1, 10, 10), 2.0), Count(1)),
            rate(queue(0, 0), 120.0),
            10,
            (9, KeepRateFloor, true),
        ),
        // min' = 4 above current 2 -> 4
        row(
            "rate floor scales up",
            with_seconds(policy(1, 10, 10), 2.0),
            rate(queue(0, 0), 120.0),
            2,
            (4, KeepRateFloor, false),
        ),
        // rate branch beats idle: min' = max(0, ceil(1 * 60 / 60)) = 1; Count(2): 10 - 1 = 9
        // > 2 -> 8
        row(
            "rate floor beats idle",
            with_md(with_seconds(policy(0, 10, 10), 1.0), Count(2)),
            idle(rate(queue(0, 0), 60.0)),
            10,
            (8, KeepRateFloor, true),
        ),
        // secondsToProcessOneJob 0: no rate branch; not idle -> min' = 1; 5 - 1 <= 5 -> 1
        row(
            "rate without seconds",
            policy(1, 10, 10),
            rate(queue(0, 0), 500.0),
            5,
            (1, ScaleDownToMin, false),
        ),
        // idle: desired 0 with maxDisruptable = current: clamp [2, 10] -> 2, Count(1) ignored
        row(
            "massive idle",
            with_md(policy(2, 10, 10), Count(1)),
            idle(queue(0, 0)),
            10,
            (2, ScaleDownIdle, false),
        ),
        // idle with 0% disruption still goes to min: 0 -> clamp [0, 10] -> 0
        row(
            "massive idle to zero",
            with_md(policy(0, 10, 10), Percent(0)),
            idle(queue(0, 0)),
            7,
            (0, ScaleDownIdle, false),
        ),
        // idle already at min -> 2
        row(
            "idle at min",
            policy(2, 10, 10),
            idle(queue(0, 0)),
            2,
            (2, NoChange, false),
        ),
        // idle below min: 0 -> clamp [3, 10] -> 3
        row(
            "idle below min",
            policy(3, 10, 10),
            idle(queue(0, 0)),
            1,
            (3, BelowMin, false),
        ),
        // partial: min' = 2; 30%: ceil(3) = 3; 10 - 2 = 8 > 3 -> 7
        row(
            "partial to min",
            with_md(policy(2, 10, 10), Percent(30)),
            queue(0, 0),
            10,
            (7, ScaleDownToMin, true),
        ),
        // partial with 100%: 10 - 2 = 8 <= 10 -> 2
        row(
            "partial unbounded",
            policy(2, 10, 10),
            queue(0, 0),
            10,
            (2, ScaleDownToMin, false),
        ),
        // partial with 0%: 10 - 2 > 0 -> 10
        row(
            "partial 0%",
            with_md(policy(2, 10, 10), Percent(0)),
            queue(0, 0),
            10,
            (10, NoChange, true),
        ),
        // not idle, at min: 2 -> 2
        row(
            "at min",
            policy(2, 10, 10),
            queue(0, 0),
            2,
            (2, NoChange, false),
        ),
    ]);
}

#[test]
fn min_max_and_rate_floor_bounds() {
    use MaxDisruption::*;
    use Reason::*;
    check(vec![
        // min >= max -> max, whatever the queue says
        row(
            "min equals max, empty",
            policy(5, 5, 10),
            queue(0, 0),
            0,
            (5, MinEqualsMax, true),
        ),
        row(
            "min equals max, backlog",
            policy(5, 5, 10),
            queue(1000, 0),
            5,
            (5, MinEqualsMax, true),
        ),
        // min > max cannot pass from_spec, but decide() must not panic: max (the idle branch
        // reaching its target is never "limited")
        row(
            "min above max",
            policy(7, 3, 10),
            idle(queue(0, 0)),
            9,
            (3, MinEqualsMax, false),
        ),
        // practo's own test: min' = max(2, ceil(10 * 2136.6 / 60)) = ceil(356.1) = 357 >= 20
        // -> 20; the branch value ceil(1 / 2500) = 1 differs -> limited
        row(
            "practo floor above max",
            with_md(with_seconds(policy(2, 20, 2500), 10.0), Percent(0)),
            rate(queue(1, 0), 2136.6),
            10,
            (20, KeepRateFloor, true),
        ),
        // floor exactly max: ceil(1 * 600 / 60) = 10 = max -> 10
        row(
            "floor equals max",
            with_seconds(policy(0, 10, 10), 1.0),
            rate(queue(0, 0), 600.0),
            10,
            (10, KeepRateFloor, false),
        ),
        // infinite rate: the floor saturates -> max
        row(
            "infinite rate",
            with_seconds(policy(0, 10, 10), 1.0),
            rate(queue(0, 0), f64::INFINITY),
            3,
            (10, KeepRateFloor, true),
        ),
        // NaN rate: no floor and not "rate > 0"; idle -> min 0
        row(
            "NaN rate",
            with_seconds(policy(0, 10, 10), 1.0),
            idle(rate(queue(0, 0), f64::NAN)),
            3,
            (0, ScaleDownIdle, false),
        ),
        // negative rate: ceil(1 * -60 / 60) = -1 < min 1 -> min' 1; not idle -> 1
        row(
            "negative rate",
            with_seconds(policy(1, 10, 10), 1.0),
            rate(queue(0, 0), -60.0),
            3,
            (1, ScaleDownToMin, false),
        ),
        // 0.1 * 600 / 60 = 1.0 in float64 -> ceil 1 -> min' = 1
        row(
            "fractional seconds",
            with_seconds(policy(0, 10, 10), 0.1),
            rate(queue(0, 0), 600.0),
            1,
            (1, KeepRateFloor, false),
        ),
        // a count disruption never scales below min: Count(100) and min' 4 -> 4
        row(
            "disruption cannot pass min",
            with_md(policy(4, 10, 10), Count(100)),
            queue(0, 0),
            9,
            (4, ScaleDownToMin, false),
        ),
    ]);
}

#[test]
fn huge_inputs_do_not_overflow() {
    use MaxDisruption::*;
    use Reason::*;
    check(vec![
        // u64::MAX + u64::MAX saturates; / 1 -> far beyond i32; clamp -> i32::MAX
        row(
            "max backlog, max replicas",
            policy(0, i32::MAX, 1),
            queue(u64::MAX, u64::MAX),
            1,
            (i32::MAX, ScaleUpBacklog, true),
        ),
        row(
            "max backlog from zero",
            policy(0, 100, 1),
            queue(u64::MAX, 0),
            0,
            (100, ScaleUpFromZero, true),
        ),
        // (2^64 - 1) / (2^31 - 1) = 8589934596 rest 3 -> ceil 8589934597 -> clamp 100
        row(
            "max backlog, max target",
            policy(0, 100, i32::MAX),
            queue(u64::MAX, 0),
            50,
            (100, ScaleUpBacklog, true),
        ),
        // current i32::MAX, 100%: maxDisruptable = 2^31 - 1; min' 0 -> 0
        row(
            "max current to min",
            policy(0, i32::MAX, 1),
            queue(0, 0),
            i32::MAX,
            (0, ScaleDownToMin, false),
        ),
        // current i32::MAX, backlog 1: ceil(1 / 1) = 1, far outside tolerance -> 1 (100%)
        row(
            "max current, tiny backlog",
            policy(0, i32::MAX, 1),
            queue(1, 0),
            i32::MAX,
            (1, ScaleDownBacklog, false),
        ),
        // maxDisruption u32::MAX with current 10 -> 3
        row(
            "max count disruption",
            with_md(policy(0, 50, 10), Count(u32::MAX)),
            queue(30, 0),
            10,
            (3, ScaleDownBacklog, false),
        ),
        // target <= 0 only by hand: read as 1 -> ceil(5 / 1) = 5
        row(
            "target zero",
            policy(0, 50, 0),
            queue(5, 0),
            0,
            (5, ScaleUpFromZero, false),
        ),
    ]);
}

fn scale_down_policy() -> Policy {
    // ceil(30 / 10) = 3 at current 10 -> practo wants 3 (100% disruption)
    policy(0, 50, 10)
}

fn decide_at(history: &History, now: Timestamp, current: i32, q: QueueSnapshot) -> Decision {
    decide(
        &scale_down_policy(),
        &q,
        current,
        now,
        history,
        &ScalerSettings::default(),
    )
}

#[test]
fn scale_down_delay_boundaries() {
    let down = queue(30, 0);
    let last = t(0);
    let history = History::with_last_scale_time(Some(last));
    let held = Decision {
        desired: 10,
        recommendation: 3,
        reason: Reason::ScaleDownDelayed,
        limited: true,
    };
    let allowed = Decision {
        desired: 3,
        recommendation: 3,
        reason: Reason::ScaleDownBacklog,
        limited: false,
    };
    // last + 600 s is not before now at 599 s or 600 s: held
    assert_eq!(decide_at(&history, t(599), 10, down), held);
    assert_eq!(decide_at(&history, t(600), 10, down), held);
    // one nanosecond later it is
    let just_after = t(600) + SignedDuration::from_nanos(1);
    assert_eq!(decide_at(&history, just_after, 10, down), allowed);
    assert_eq!(decide_at(&history, t(601), 10, down), allowed);
    // no previous scale: the first scale-down is not delayed
    assert_eq!(decide_at(&History::default(), t(1), 10, down), allowed);
    // a last scale time in the future (clock skew) holds
    assert_eq!(decide_at(&history, t(-5), 10, down), held);
}

#[test]
fn scale_up_and_no_change_are_never_delayed() {
    let history = History::with_last_scale_time(Some(t(0)));
    // ceil(250 / 10) = 25 > 10: up one second after the last scale
    let d = decide_at(&history, t(1), 10, queue(250, 0));
    assert_eq!((d.desired, d.reason), (25, Reason::ScaleUpBacklog));
    // ceil(100 / 10) = 10 = current
    let d = decide_at(&history, t(1), 10, queue(100, 0));
    assert_eq!((d.desired, d.reason), (10, Reason::WithinTolerance));
}

#[test]
fn delay_follows_recorded_scales_and_restarts() {
    let settings = ScalerSettings {
        default_max_disruption: MaxDisruption::Percent(100),
        scale_down_delay: Duration::from_secs(60),
    };
    let p = scale_down_policy();
    let mut history = History::default();
    // scale up at t=0 (0 -> 25), recorded
    let up = decide(&p, &queue(250, 0), 0, t(0), &history, &settings);
    assert_eq!(up.desired, 25);
    history.record(&up, 0, t(0));
    assert_eq!(history.last_scale_time(), Some(t(0)));
    // 30 s later the backlog is 30: practo wants 3 but 0 + 60 s is not before 30 s
    let d = decide(&p, &queue(30, 0), 25, t(30), &history, &settings);
    assert_eq!(
        (d.desired, d.recommendation, d.reason),
        (25, 3, Reason::ScaleDownDelayed)
    );
    history.record(&d, 25, t(30));
    // the held decision was no scale: last scale time unchanged
    assert_eq!(history.last_scale_time(), Some(t(0)));
    // after a restart only LastScaleTime survives; the delay still holds at 60 s
    let restarted = History::with_last_scale_time(history.last_scale_time());
    let d = decide(&p, &queue(30, 0), 25, t(60), &restarted, &settings);
    assert_eq!(d.reason, Reason::ScaleDownDelayed);
    // and passes at 61 s: 25 -> 3 (25 - 3 = 22 <= 100% of 25)
    let d = decide(&p, &queue(30, 0), 25, t(61), &restarted, &settings);
    assert_eq!((d.desired, d.reason), (3, Reason::ScaleDownBacklog));
}

#[test]
fn zero_and_unrepresentable_delays() {
    let history = History::with_last_scale_time(Some(t(0)));
    let zero = ScalerSettings {
        default_max_disruption: MaxDisruption::Percent(100),
        scale_down_delay: Duration::ZERO,
    };
    let p = scale_down_policy();
    // delay 0: last + 0 is not before now when now == last
    let d = decide(&p, &queue(30, 0), 10, t(0), &history, &zero);
    assert_eq!(d.reason, Reason::ScaleDownDelayed);
    let d = decide(&p, &queue(30, 0), 10, t(1), &history, &zero);
    assert_eq!(d.desired, 3);
    // a delay beyond any time span never passes (and does not panic)
    let forever = ScalerSettings {
        default_max_disruption: MaxDisruption::Percent(100),
        scale_down_delay: Duration::MAX,
    };
    let d = decide(&p, &queue(30, 0), 10, t(1_000_000), &history, &forever);
    assert_eq!(d.reason, Reason::ScaleDownDelayed);
}

#[test]
fn rate_floor_function() {
    // seconds 0: feature off
    assert_eq!(rate_floor(3, 0.0, 1e9), 3);
    // ceil(2 * 120 / 60) = 4 > 1
    assert_eq!(rate_floor(1, 2.0, 120.0), 4);
    // ceil(0.3 * 10 / 60) = ceil(0.05) = 1 > 0
    assert_eq!(rate_floor(0, 0.3, 10.0), 1);
    // ceil(1 * 59 / 60) = 1 < min 5
    assert_eq!(rate_floor(5, 1.0, 59.0), 5);
    assert_eq!(rate_floor(0, 1.0, f64::INFINITY), i32::MAX);
    assert_eq!(rate_floor(2, 1.0, f64::NAN), 2);
    assert_eq!(rate_floor(-3, 0.0, 0.0), 0);
}
