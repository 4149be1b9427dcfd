//! `workerpodautoscaler simulate`: replay a queue trace through the real scaling engine.
//!
//! The tuning tool: take the WPA manifest one would `kubectl create`, a CSV trace of queue
//! state, and see every decision the controller would make, as CSV and optionally as an SVG
//! plot. Replicas follow each decision instantly (no pod start-up time is modelled).
//!
//! `simulate compare` ([`compare`]) models the cluster instead: task arrivals
//! ([`arrivals`], [`generate`]) through pods that start, hold and finish tasks ([`cluster`]),
//! under policies that see what a controller sees ([`view`], [`policies`]), beside an offline
//! lower bound ([`bound`]).

pub mod arrivals;
pub mod bound;
pub mod cluster;
pub mod compare;
pub mod compare_plot;
pub mod context;
mod events;
pub mod generate;
pub mod keda;
pub mod max_wait;
pub mod plot;
pub mod policies;
pub mod practo;
pub mod trace;
pub mod view;

use std::io::Write;
use std::time::Duration;

use crate::crd::WorkerPodAutoScaler;
use crate::scaler::{
    self, History, MaxDisruption, Policy, QueueSnapshot, ScalerSettings, WorkerActivity,
};
use trace::TraceRow;

/// What the simulation needs besides the trace.
#[derive(Debug, Clone)]
pub struct SimulateOptions {
    /// Replicas before the first step; default the WPA's minReplicas.
    pub initial_replicas: Option<i32>,
    /// practo's `--scale-down-delay-after-last-scale-activity`.
    pub scale_down_delay: Duration,
    /// practo's `--wpa-default-max-disruption`.
    pub default_max_disruption: MaxDisruption,
}

impl Default for SimulateOptions {
    fn default() -> Self {
        let settings = ScalerSettings::default();
        Self {
            initial_replicas: None,
            scale_down_delay: settings.scale_down_delay,
            default_max_disruption: settings.default_max_disruption,
        }
    }
}

/// One output row: the state before the step and what the engine decided.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub t: f64,
    pub messages: u64,
    pub in_flight: u64,
    pub current: i32,
    pub desired: i32,
    pub reason: String,
    /// Busy pods as the trace gave them (`None`: no worker signal in the trace).
    pub busy: Option<u64>,
    /// Busy pods a scale-down kept (or that held it): the protected scale-ins.
    pub protected: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum SimulateError {
    #[error("WPA manifest: {0}")]
    Manifest(String),
    #[error("WPA manifest: invalid spec: {0}")]
    Spec(#[from] scaler::SpecError),
    #[error(transparent)]
    Trace(#[from] trace::TraceError),
    #[error("--initial-replicas must be >= 0, got {0}")]
    InitialReplicas(i32),
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
}

/// Finds the WorkerPodAutoScaler in a manifest file (which may hold several documents, e.g.
/// the worker Deployment too).
pub fn load_wpa(yaml: &str) -> Result<WorkerPodAutoScaler, SimulateError> {
    let documents: Vec<serde_json::Value> =
        serde_saphyr::from_multiple(yaml).map_err(|e| SimulateError::Manifest(e.to_string()))?;
    let mut found = documents
        .into_iter()
        .filter(|doc| doc.get("kind").and_then(|k| k.as_str()) == Some("WorkerPodAutoScaler"));
    let document = found.next().ok_or_else(|| {
        SimulateError::Manifest("no document of kind WorkerPodAutoScaler".to_string())
    })?;
    if found.next().is_some() {
        return Err(SimulateError::Manifest(
            "more than one WorkerPodAutoScaler; put the one to simulate in its own file"
                .to_string(),
        ));
    }
    let wpa: WorkerPodAutoScaler =
        serde_json::from_value(document).map_err(|e| SimulateError::Manifest(e.to_string()))?;
    // The trace holds the WPA's total backlog, whatever its queues; the queue fields are
    // still checked, as the API server would.
    wpa.spec
        .queue_uris()
        .map_err(|e| SimulateError::Manifest(format!("invalid spec: {e}")))?;
    Ok(wpa)
}

/// Runs the trace through the engine, one decision per row.
pub fn simulate(
    wpa: &WorkerPodAutoScaler,
    rows: &[TraceRow],
    options: &SimulateOptions,
) -> Result<Vec<Step>, SimulateError> {
    let settings = ScalerSettings {
        default_max_disruption: options.default_max_disruption,
        scale_down_delay: options.scale_down_delay,
    };
    let policy = Policy::from_spec(&wpa.spec, &settings)?;
    let mut current = match options.initial_replicas {
        Some(n) if n < 0 => return Err(SimulateError::InitialReplicas(n)),
        Some(n) => n,
        None => policy.min,
    };
    let mut history = History::default();
    let mut steps = Vec::with_capacity(rows.len());
    for row in rows {
        let now = trace_time(row.t);
        let queue = QueueSnapshot {
            visible: row.messages,
            in_flight: row.in_flight,
            sent_per_minute: row.sent_per_minute,
            idle: row.idle,
        };
        let workers = row.busy.map(|busy| busy_workers(busy, current));
        let decision = scaler::decide_with_workers(
            &policy,
            &queue,
            workers.as_ref(),
            current,
            now,
            &history,
            &settings,
        );
        let removing_or_held =
            decision.desired < current || decision.reason == scaler::Reason::HoldBusyWorkers;
        steps.push(Step {
            t: row.t,
            messages: row.messages,
            in_flight: row.in_flight,
            current,
            desired: decision.desired,
            reason: decision.reason.to_string(),
            busy: row.busy,
            protected: match &workers {
                Some(w) if removing_or_held => u64::from(w.busy),
                _ => 0,
            },
        });
        history.record(&decision, current, now);
        current = decision.desired;
    }
    Ok(steps)
}

/// What a trace's `busy` column tells the engine: that many of the current pods run at
/// least one task each (a trace does not say more), the others are idle.
fn busy_workers(busy: u64, current: i32) -> WorkerActivity {
    let pods = u32::try_from(current).unwrap_or(0);
    let busy = u32::try_from(busy).unwrap_or(u32::MAX).min(pods);
    WorkerActivity {
        busy,
        idle: pods - busy,
        unknown: 0,
        active_tasks: u64::from(busy),
        recently_busy: busy > 0,
        keep: busy,
    }
}

/// Trace time as an absolute instant: the Unix epoch plus `t` (whole milliseconds).
fn trace_time(t: f64) -> jiff::Timestamp {
    // t is finite and >= 0 (checked by the trace reader); saturate absurdly large values.
    let millis = (t * 1000.0).round().min(1e15) as i64;
    jiff::Timestamp::from_millisecond(millis).unwrap_or(jiff::Timestamp::MAX)
}

/// Writes the output CSV: `t,messages,in_flight,current,desired,reason`, and
/// `busy,protected` when the trace has a `busy` column.
pub fn write_csv(steps: &[Step], out: impl Write) -> Result<(), SimulateError> {
    let mut writer = csv::Writer::from_writer(out);
    let to_io = |e: csv::Error| std::io::Error::other(e.to_string());
    let with_workers = steps.iter().any(|s| s.busy.is_some());
    let mut header = vec!["t", "messages", "in_flight", "current", "desired", "reason"];
    if with_workers {
        header.extend(["busy", "protected"]);
    }
    writer.write_record(&header).map_err(to_io)?;
    for step in steps {
        let mut record = vec![
            format_seconds(step.t),
            step.messages.to_string(),
            step.in_flight.to_string(),
            step.current.to_string(),
            step.desired.to_string(),
            step.reason.clone(),
        ];
        if with_workers {
            record.push(step.busy.map(|b| b.to_string()).unwrap_or_default());
            record.push(step.protected.to_string());
        }
        writer.write_record(&record).map_err(to_io)?;
    }
    writer.flush()?;
    Ok(())
}

/// `15` rather than `15.0` for whole seconds, so output diffs cleanly against the input.
fn format_seconds(t: f64) -> String {
    if t.fract() == 0.0 && t.abs() < 1e15 {
        format!("{}", t as i64)
    } else {
        t.to_string()
    }
}

/// The plot's points for a finished simulation.
pub fn plot_points(steps: &[Step]) -> Vec<plot::PlotPoint> {
    steps
        .iter()
        .map(|s| plot::PlotPoint {
            t: s.t,
            messages: s.messages,
            in_flight: s.in_flight,
            desired: s.desired,
        })
        .collect()
}

#[cfg(test)]
mod load_tests {
    use super::*;

    const SEVERAL: &str = "apiVersion: k8s.practo.dev/v1
kind: WorkerPodAutoScaler
metadata: {name: lms-worker, namespace: openedx}
spec:
  minReplicas: 1
  maxReplicas: 8
  targetMessagesPerWorker: 20
  deploymentName: lms-worker
  queueURIs:
    - redis://redis:6379/0/edx.lms.core.default
    - redis://redis:6379/0/edx.lms.core.high
";

    #[test]
    fn a_wpa_with_several_queues_is_simulated_on_its_total_backlog() {
        let wpa = load_wpa(SEVERAL).expect("loads");
        assert_eq!(wpa.spec.queue_uris().expect("queues").len(), 2);
        let with_both = SEVERAL.replace(
            "  queueURIs:",
            "  queueURI: redis://redis:6379/0/x\n  queueURIs:",
        );
        let error = load_wpa(&with_both).expect_err("both queue fields");
        assert!(
            error
                .to_string()
                .contains("exactly one of queueURI and queueURIs"),
            "{error}"
        );
    }

    #[test]
    fn a_busy_column_shows_the_protected_scale_ins() {
        let wpa = load_wpa(&SEVERAL.replace("minReplicas: 1", "minReplicas: 0")).expect("loads");
        let trace = "t,messages,idle,busy\n0,0,1,2\n30,0,1,1\n60,0,1,0\n";
        let rows = trace::read_trace(trace.as_bytes()).expect("trace");
        let options = SimulateOptions {
            initial_replicas: Some(4),
            scale_down_delay: Duration::ZERO,
            ..SimulateOptions::default()
        };
        let steps = simulate(&wpa, &rows, &options).expect("simulates");
        let summary: Vec<(i32, i32, &str, u64)> = steps
            .iter()
            .map(|s| (s.current, s.desired, s.reason.as_str(), s.protected))
            .collect();
        assert_eq!(
            summary,
            [
                // Queue empty and idle, but 2 of 4 pods run tasks: down to 2, those kept.
                (4, 2, "HoldBusyWorkers", 2),
                // One task left, which alone needs one worker: the backlog rule keeps it.
                (2, 1, "ScaleDownBacklog", 1),
                // Nothing running: practo's idle scale-down.
                (1, 0, "ScaleDownIdle", 0),
            ]
        );
        let mut csv = Vec::new();
        write_csv(&steps, &mut csv).expect("writes");
        let text = String::from_utf8(csv).expect("utf-8");
        assert!(
            text.starts_with("t,messages,in_flight,current,desired,reason,busy,protected\n0,0,0,4,2,HoldBusyWorkers,2,2\n"),
            "{text}"
        );
        // Without the column the output is as before.
        let plain = trace::read_trace("t,messages,idle\n0,0,1\n".as_bytes()).expect("trace");
        let mut csv = Vec::new();
        write_csv(
            &simulate(&wpa, &plain, &options).expect("simulates"),
            &mut csv,
        )
        .expect("writes");
        assert!(
            String::from_utf8(csv)
                .expect("utf-8")
                .starts_with("t,messages,in_flight,current,desired,reason\n")
        );
    }
}
