//! What the table does not show: status contents, timestamps, unchanged statuses and
//! messages.

use serde_json::json;

use super::super::plan::HOLD_NO_METRICS;
use super::super::problem::INVALID_QUEUE_URI;
use super::*;

/// The WPA as it is after `plan`'s status was written.
fn with_status(mut wpa: WorkerPodAutoScaler, plan: &Plan) -> WorkerPodAutoScaler {
    if let Some(status) = &plan.status {
        wpa.status = Some(status.clone());
    }
    wpa
}

#[test]
fn a_scale_sets_the_scale_times_and_the_desired_count() {
    let wpa = wpa(json!({}));
    let plan = plan_for(
        &wpa,
        &observed(Ok(world(&wpa, 0, fresh(12, 3, false))), History::default()),
    );
    let status = plan.status.as_ref().expect("status");
    assert_eq!(status.desired_replicas, 3);
    assert_eq!(status.current_replicas, 0);
    assert_eq!(status.current_messages, 15, "visible + in flight");
    assert_eq!(status.in_flight_messages, Some(3));
    assert_eq!(status.last_scale_time.as_ref().map(|t| t.0), Some(now()));
    assert_eq!(status.last_scale_up_time.as_ref().map(|t| t.0), Some(now()));
    assert_eq!(status.last_scale_down_time, None);
    assert_eq!(
        status.last_decision_reason.as_deref(),
        Some("ScaleUpFromZero")
    );
    assert_eq!(status.observed_generation, Some(1));
    let change = plan.scale.as_ref().expect("scale");
    assert!(change.is_up());
    assert_eq!(change.target, "Deployment worker");
    assert!(
        plan.events[0]
            .note
            .starts_with("scaled Deployment worker from 0 to 3: "),
        "{}",
        plan.events[0].note
    );
    let gauges = plan.gauges.as_ref().expect("gauges");
    assert_eq!(
        (gauges.messages, gauges.current, gauges.desired),
        (15, 0, 3)
    );
}

#[test]
fn an_unchanged_status_is_not_written_again_even_later() {
    let wpa = wpa(json!({}));
    let first = plan_for(
        &wpa,
        &observed(Ok(world(&wpa, 2, fresh(10, 0, false))), History::default()),
    );
    assert!(first.status.is_some(), "a new WPA gets a status");
    let wpa = with_status(wpa, &first);
    let mut later = observed(Ok(world(&wpa, 2, fresh(10, 0, false))), History::default());
    later.now = now() + jiff::SignedDuration::from_secs(30);
    let second = plan_for(&wpa, &later);
    assert_eq!(second.status, None, "same state: no status write");
    assert!(second.gauges.is_some(), "gauges are still set");
}

#[test]
fn a_transition_time_changes_only_with_the_condition_status() {
    let wpa = wpa(json!({}));
    let first = plan_for(
        &wpa,
        &observed(Ok(world(&wpa, 2, fresh(10, 0, false))), History::default()),
    );
    let wpa = with_status(wpa, &first);
    let mut later = observed(Ok(world(&wpa, 2, failing())), History::default());
    later.now = now() + jiff::SignedDuration::from_secs(30);
    let failed = plan_for(&wpa, &later);
    let ready = condition(&failed, "Ready").expect("Ready");
    assert_eq!(ready.status, "False");
    assert_eq!(ready.last_transition_time.0, later.now);
    let able = condition(&failed, "AbleToScale").expect("AbleToScale");
    assert_eq!(able.reason, "HoldingReplicas");
    assert_eq!(
        able.last_transition_time.0,
        now(),
        "AbleToScale stayed True: its transition time is kept"
    );
}

#[test]
fn a_failing_queue_holds_the_replicas_and_says_why() {
    let wpa = wpa(json!({}));
    let plan = plan_for(
        &wpa,
        &observed(Ok(world(&wpa, 4, failing())), History::default()),
    );
    assert_eq!(plan.scale, None);
    let status = plan.status.as_ref().expect("status");
    assert_eq!(status.desired_replicas, 4);
    assert_eq!(
        status.last_decision_reason.as_deref(),
        Some(HOLD_NO_METRICS)
    );
    let metrics = condition(&plan, "MetricsAvailable").expect("condition");
    assert!(
        metrics
            .message
            .starts_with("holding 4 replicas: cannot reach"),
        "{}",
        metrics.message
    );
    assert_eq!(plan.gauges, None, "no metrics, no gauges");
}

#[test]
fn stale_metrics_are_reported_but_not_acted_on() {
    let wpa = wpa(json!({}));
    let plan = plan_for(
        &wpa,
        &observed(Ok(world(&wpa, 4, stale(0))), History::default()),
    );
    assert_eq!(plan.scale, None);
    let status = plan.status.as_ref().expect("status");
    assert_eq!(status.current_messages, 0);
    assert_eq!(status.desired_replicas, 4);
}

#[test]
fn a_problem_keeps_the_rest_of_the_status() {
    let wpa = wpa(json!({}));
    let scaled = plan_for(
        &wpa,
        &observed(Ok(world(&wpa, 0, fresh(12, 0, false))), History::default()),
    );
    let wpa = with_status(wpa, &scaled);
    let problem = Problem::new(INVALID_QUEUE_URI, "queueURI: unknown scheme");
    let plan = plan_for(&wpa, &observed(Err(problem), History::default()));
    let status = plan.status.as_ref().expect("status");
    assert_eq!(status.desired_replicas, 3, "kept from before");
    assert!(status.last_scale_time.is_some(), "kept from before");
    assert_eq!(
        status.last_decision_reason.as_deref(),
        Some(INVALID_QUEUE_URI)
    );
    assert_eq!(plan.events.len(), 1);
    assert_eq!(plan.events[0].note, "queueURI: unknown scheme");
    // The same problem again: the Event is repeated (the recorder aggregates), the status
    // is not rewritten.
    let wpa = with_status(wpa, &plan);
    let again = plan_for(
        &wpa,
        &observed(
            Err(Problem::new(INVALID_QUEUE_URI, "queueURI: unknown scheme")),
            History::default(),
        ),
    );
    assert_eq!(again.status, None);
    assert_eq!(again.events.len(), 1);
}

#[test]
fn a_delayed_scale_down_is_looked_at_no_later_than_the_resync() {
    let wpa = wpa(json!({}));
    // The last scale was 5 s ago; with a 600 s delay the remaining 595 s exceed a 60 s resync.
    let mut settings = settings();
    settings.resync = Duration::from_secs(60);
    let plan = plan(
        &wpa,
        &observed(Ok(world(&wpa, 5, fresh(0, 0, false))), scaled_ago(5)),
        &settings,
    );
    assert_eq!(plan.requeue, Duration::from_secs(60));
    assert_eq!(plan.scale, None);
}

#[test]
fn messages_in_flight_keep_a_worker() {
    // Nothing waiting, two messages being worked on: the scale-down stops at one worker.
    let wpa = wpa(json!({"behavior": {"scaleDown": {"stabilizationWindowSeconds": 0}}}));
    let plan = plan_for(
        &wpa,
        &observed(Ok(world(&wpa, 2, fresh(0, 2, false))), History::default()),
    );
    assert_eq!(plan.scale.as_ref().map(|s| s.to), Some(1));
    assert_eq!(plan.status.as_ref().map(|s| s.current_messages), Some(2));
}

#[test]
fn nothing_is_written_before_the_first_poll() {
    // A restart: the WPA has a status, its queue has not been polled by this process yet.
    let wpa = wpa(json!({}));
    let earlier = plan_for(
        &wpa,
        &observed(Ok(world(&wpa, 2, fresh(10, 0, false))), History::default()),
    );
    let wpa = with_status(wpa, &earlier);
    for queue in [None, Some(QueueState::default())] {
        let plan = plan_for(
            &wpa,
            &observed(Ok(world(&wpa, 2, queue)), History::default()),
        );
        assert_eq!(
            plan.status, None,
            "no status write until the queue was polled"
        );
        assert_eq!(plan.scale, None);
        assert!(plan.events.is_empty());
        assert_eq!(plan.record, None);
        assert_eq!(plan.requeue, super::super::plan::FIRST_POLL_RECHECK);
    }
}

#[test]
fn several_queues_show_each_queue_and_decide_on_their_sum() {
    use crate::queue::registry::combined::combine;
    let wpa = wpa(json!({}));
    let (default, high) = (fresh(6, 1, false), fresh(3, 0, false));
    let (default, high) = (default.expect("state"), high.expect("state"));
    let mut world = world(&wpa, 1, Some(combine([&default, &high])));
    world.per_queue = vec![
        ("redis://r:6379/0/default".to_string(), default),
        ("redis://r:6379/0/high".to_string(), high),
    ];
    let plan = plan_for(&wpa, &observed(Ok(world), History::default()));
    let status = plan.status.as_ref().expect("status");
    assert_eq!(status.current_messages, 10, "6 + 1 + 3");
    assert_eq!(status.desired_replicas, 2, "ceil(10 / 5)");
    let lines: Vec<(&str, i64, Option<i64>)> = status
        .queues
        .iter()
        .map(|q| (q.queue.as_str(), q.messages, q.in_flight_messages))
        .collect();
    assert_eq!(
        lines,
        vec![
            ("redis://r:6379/0/default", 7, Some(1)),
            ("redis://r:6379/0/high", 3, Some(0)),
        ]
    );
    assert!(status.queues.iter().all(|q| q.error.is_none() && !q.idle));
    let gauges = plan.gauges.as_ref().expect("gauges");
    assert_eq!(
        gauges.per_queue,
        vec![
            ("redis://r:6379/0/default".to_string(), 7),
            ("redis://r:6379/0/high".to_string(), 3),
        ]
    );
}

#[test]
fn one_failing_queue_of_several_holds_the_replicas_and_is_named() {
    use crate::queue::registry::combined::combine;
    let wpa = wpa(json!({}));
    let ok = fresh(0, 0, true).expect("state");
    let down = failing().expect("state");
    let mut world = world(&wpa, 3, Some(combine([&ok, &down])));
    world.per_queue = vec![
        ("redis://r:6379/0/default".to_string(), ok),
        ("redis://r:6379/0/high".to_string(), down),
    ];
    let plan = plan_for(&wpa, &observed(Ok(world), History::default()));
    assert!(plan.scale.is_none(), "no scale-down while a queue fails");
    let status = plan.status.as_ref().expect("status");
    assert_eq!(status.desired_replicas, 3);
    assert_eq!(
        status.last_decision_reason.as_deref(),
        Some(HOLD_NO_METRICS)
    );
    assert!(status.queues[0].error.is_none() && status.queues[0].idle);
    assert!(status.queues[1].error.is_some() && !status.queues[1].idle);
}

#[test]
fn one_queue_has_no_per_queue_lines() {
    let wpa = wpa(json!({}));
    let plan = plan_for(
        &wpa,
        &observed(Ok(world(&wpa, 0, fresh(3, 0, false))), History::default()),
    );
    assert!(plan.status.as_ref().expect("status").queues.is_empty());
    assert!(plan.gauges.as_ref().expect("gauges").per_queue.is_empty());
}
