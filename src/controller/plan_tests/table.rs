//! One row per way a reconcile can go: the inputs, and the scale, conditions, Events,
//! history record and requeue the plan must produce.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::json;

use super::super::plan::{BEHAVIOR_RECHECK, reasons};
use super::super::problem::{self, Problem};
use super::*;

struct Row {
    name: &'static str,
    wpa: WorkerPodAutoScaler,
    dry_run_flag: bool,
    world: Result<World, Problem>,
    history: History,
    // Expected:
    scale_to: Option<i32>,
    ready: &'static str,
    metrics: Option<&'static str>,
    able: &'static str,
    limited: Option<&'static str>,
    events: &'static [&'static str],
    recorded: bool,
    requeue: Duration,
}

fn row(
    name: &'static str,
    wpa: WorkerPodAutoScaler,
    replicas: i32,
    queue: Option<QueueState>,
) -> Row {
    let world = Ok(world(&wpa, replicas, queue));
    Row {
        name,
        wpa,
        dry_run_flag: false,
        world,
        history: History::default(),
        scale_to: None,
        ready: reasons::RECONCILED,
        metrics: Some(reasons::METRICS_FRESH),
        able: reasons::READY_FOR_NEW_SCALE,
        limited: Some(reasons::DESIRED_WITHIN_RANGE),
        events: &[],
        recorded: true,
        requeue: RESYNC,
    }
}

fn problem_row(reason: &'static str) -> Row {
    let wpa = wpa(json!({}));
    Row {
        name: reason,
        wpa,
        dry_run_flag: false,
        world: Err(Problem::new(reason, format!("{reason} happened"))),
        history: History::default(),
        scale_to: None,
        ready: reason,
        metrics: None,
        able: reason,
        limited: None,
        events: &[],
        recorded: false,
        requeue: RESYNC,
    }
}

fn rows() -> Vec<Row> {
    let behavior = json!({"behavior": {"scaleUp": {
        "stabilizationWindowSeconds": 0,
        "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}]
    }}});
    let mut rows = vec![
        Row {
            scale_to: Some(3),
            able: reasons::SCALED,
            events: &["ScaledUp"],
            ..row(
                "backlog on a queue at zero replicas",
                wpa(json!({})),
                0,
                fresh(12, 0, false),
            )
        },
        Row {
            metrics: Some(reasons::QUEUE_NOT_DECLARED),
            ..row(
                "a queue nobody has declared yet, at zero replicas",
                wpa(json!({})),
                0,
                not_declared(),
            )
        },
        Row {
            metrics: Some(reasons::METRICS_PARTIAL),
            scale_to: Some(3),
            able: reasons::SCALED,
            events: &["ScaledUp"],
            ..row(
                "one of two sources answered",
                wpa(json!({})),
                0,
                partial(12),
            )
        },
        row(
            "backlog matches the workers",
            wpa(json!({})),
            2,
            fresh(10, 0, false),
        ),
        Row {
            scale_to: Some(0),
            able: reasons::SCALED,
            events: &["ScaledDown"],
            ..row(
                "idle workers, no backlog, no recent scale",
                wpa(json!({})),
                3,
                fresh(0, 0, true),
            )
        },
        Row {
            scale_to: Some(10),
            able: reasons::SCALED,
            limited: Some("AboveMax"),
            events: &["ScaledDown"],
            ..row(
                "more workers than maxReplicas",
                wpa(json!({})),
                12,
                fresh(100, 0, false),
            )
        },
        Row {
            able: reasons::PAUSED,
            recorded: false,
            ..row(
                "paused with a change wanted",
                paused(wpa(json!({}))),
                0,
                fresh(12, 0, false),
            )
        },
        row(
            "paused with nothing to change",
            paused(wpa(json!({}))),
            2,
            fresh(10, 0, false),
        ),
        Row {
            able: reasons::DRY_RUN,
            events: &["DryRun"],
            recorded: false,
            ..row(
                "dry run in the spec",
                wpa(json!({"dryRun": true})),
                0,
                fresh(12, 0, false),
            )
        },
        Row {
            dry_run_flag: true,
            able: reasons::DRY_RUN,
            events: &["DryRun"],
            recorded: false,
            ..row("--dry-run", wpa(json!({})), 0, fresh(12, 0, false))
        },
        Row {
            history: scaled_ago(60),
            limited: Some("ScaleDownDelayed"),
            // 600 s delay, last scale 60 s ago: look again just after it ends.
            requeue: Duration::from_millis(540_200),
            ..row(
                "scale-down within the delay",
                wpa(json!({})),
                5,
                fresh(0, 0, false),
            )
        },
        Row {
            scale_to: Some(2),
            able: reasons::SCALED,
            limited: Some("RateLimited"),
            events: &["ScaledUp"],
            requeue: BEHAVIOR_RECHECK,
            ..row(
                "behavior holds back part of a scale-up",
                wpa(behavior),
                1,
                fresh(50, 0, false),
            )
        },
        Row {
            ready: reasons::METRICS_UNAVAILABLE,
            metrics: Some(reasons::POLL_FAILED),
            able: reasons::HOLDING_REPLICAS,
            limited: Some(reasons::NO_DECISION),
            recorded: false,
            ..row(
                "broker unreachable before any poll",
                wpa(json!({})),
                4,
                failing(),
            )
        },
        Row {
            ready: reasons::METRICS_UNAVAILABLE,
            metrics: Some(reasons::POLL_FAILED),
            able: reasons::HOLDING_REPLICAS,
            limited: Some(reasons::NO_DECISION),
            recorded: false,
            // Old metrics say "empty": still no scale-down.
            ..row("stale metrics after a failure", wpa(json!({})), 4, stale(0))
        },
    ];
    for reason in problem::ALL_REASONS {
        rows.push(problem_row(reason));
    }
    rows
}

#[test]
fn every_row_plans_what_it_should() {
    for row in rows() {
        let name = row.name;
        let mut settings = settings();
        settings.dry_run = row.dry_run_flag;
        let observed = observed(row.world, row.history);
        let plan = plan(&row.wpa, &observed, &settings);
        assert_eq!(
            plan.scale.as_ref().map(|s| s.to),
            row.scale_to,
            "{name}: scale"
        );
        let reason = |t: &str| condition(&plan, t).map(|c| c.reason.clone());
        assert_eq!(reason("Ready").as_deref(), Some(row.ready), "{name}: Ready");
        assert_eq!(
            reason("MetricsAvailable").as_deref(),
            row.metrics,
            "{name}: MetricsAvailable"
        );
        assert_eq!(
            reason("AbleToScale").as_deref(),
            Some(row.able),
            "{name}: AbleToScale"
        );
        assert_eq!(
            reason("ScalingLimited").as_deref(),
            row.limited,
            "{name}: ScalingLimited"
        );
        let events: Vec<&str> = plan.events.iter().map(|e| e.reason.as_str()).collect();
        let expected_events: Vec<&str> = if observed.world.is_err() {
            vec![name]
        } else {
            row.events.to_vec()
        };
        assert_eq!(events, expected_events, "{name}: events");
        assert_eq!(
            plan.record.is_some(),
            row.recorded,
            "{name}: history record"
        );
        assert_eq!(plan.requeue, row.requeue, "{name}: requeue");
        assert_eq!(
            plan.problem.is_some(),
            observed.world.is_err(),
            "{name}: problem"
        );
        // Never a scale without a decision recorded with it.
        assert!(plan.scale.is_none() || plan.record.is_some(), "{name}");
    }
}

#[test]
fn ready_is_true_exactly_when_metrics_are_available() {
    for row in rows() {
        let name = row.name;
        let observed = observed(row.world, row.history);
        let plan = plan_for(&row.wpa, &observed);
        let ready = condition(&plan, "Ready").map(|c| c.status.clone());
        let metrics = condition(&plan, "MetricsAvailable").map(|c| c.status.clone());
        match metrics.as_deref() {
            None => assert_eq!(ready.as_deref(), Some("False"), "{name}: a problem"),
            Some("True") => assert_eq!(ready.as_deref(), Some("True"), "{name}"),
            Some(_) => assert_eq!(ready.as_deref(), Some("False"), "{name}"),
        }
    }
}

#[test]
fn the_table_covers_every_condition_reason() {
    let mut seen = BTreeSet::new();
    for row in rows() {
        let observed = observed(row.world, row.history);
        let mut settings = settings();
        settings.dry_run = row.dry_run_flag;
        let plan = plan(&row.wpa, &observed, &settings);
        for c in plan.status.iter().flat_map(|s| s.conditions.iter()) {
            seen.insert(c.reason.clone());
        }
    }
    let missing: Vec<&str> = reasons::ALL
        .iter()
        .chain(problem::ALL_REASONS.iter())
        .copied()
        .filter(|r| !seen.contains(*r))
        .collect();
    assert!(missing.is_empty(), "no table row produces {missing:?}");
}
