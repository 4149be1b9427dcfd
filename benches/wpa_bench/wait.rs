//! Scenario 5: waits and cost under Poisson arrivals. The closed loop of scenario 4 (real
//! Celery workers as Pods, here with a start-up delay) fed one seeded Poisson trace in
//! phases, once per sizing rule: practo's at several targetMessagesPerWorker, and
//! maxWaitSeconds. The same trace for every row; what counts is how long tasks waited and
//! what the pods cost.

use std::time::Duration;

use anyhow::Result;

use crate::stats::Table;
use crate::support::apiserver::PodIps;
use crate::support::closed_loop::load::Load;
use crate::support::closed_loop::{self, Case, CeleryBroker, Flags, Layout, Outcome, Sizing};
use crate::{Args, Report};

/// What one run of scenario 5 is.
pub struct WaitRun {
    pub sizing: Sizing,
    pub flags: Flags,
}

/// The scenario's settings.
pub struct WaitScenario {
    pub load: Load,
    pub start_delay: Duration,
    pub max_wait: i32,
    pub max_replicas: i32,
    pub targets: Vec<i32>,
    pub timeout: Duration,
    pub redis_port: u16,
}

impl WaitScenario {
    /// practo's rule at each target with the short delays, practo's at the middle target
    /// with every flag at its default, and maxWaitSeconds with every flag at its default.
    pub fn runs(&self) -> Vec<WaitRun> {
        let practo = |target: i32, flags| WaitRun {
            sizing: Sizing {
                target_messages_per_worker: target,
                max_wait_seconds: None,
                max_replicas: self.max_replicas,
            },
            flags,
        };
        let mut runs: Vec<WaitRun> = self
            .targets
            .iter()
            .map(|t| practo(*t, Flags::ShortDelays))
            .collect();
        if let Some(middle) = self.targets.get(self.targets.len() / 2) {
            runs.push(practo(*middle, Flags::Defaults));
        }
        runs.push(WaitRun {
            sizing: Sizing {
                target_messages_per_worker: self.targets.first().copied().unwrap_or(5),
                max_wait_seconds: Some(self.max_wait),
                max_replicas: self.max_replicas,
            },
            flags: Flags::Defaults,
        });
        runs
    }

    pub async fn run(&self, run: &WaitRun, dir: &std::path::Path) -> Result<Outcome> {
        closed_loop::run(
            Case {
                broker: CeleryBroker::Redis,
                layout: Layout::OneQueue,
                acks_late: true,
                signal: "Auto",
                load: self.load.clone(),
                grace: Duration::from_secs(30),
                timeout: self.timeout,
                redis_port: self.redis_port,
                pod_ips: PodIps::Cluster,
                sizing: run.sizing,
                start_delay: self.start_delay,
                flags: run.flags,
                drain: true,
            },
            dir,
        )
        .await
    }
}

fn seconds(v: Option<f64>) -> String {
    v.map_or("-".to_string(), |v| format!("{v:.1} s"))
}

/// One row per run: waits, cost, actions.
pub fn table(outcomes: &[(String, Outcome)], max_wait: i32) -> Table {
    let mut table = Table::new(&[
        "sizing",
        "flags",
        "completed",
        "wait p50",
        "wait p95",
        "wait max",
        &format!("tasks waiting over {max_wait} s"),
        "worker-seconds",
        "per task-second",
        "scale writes",
        "peak replicas",
        "learned after",
    ]);
    for (flags, o) in outcomes {
        let f = &o.figures;
        let work = o.case.load.work();
        let over = f.waits.iter().filter(|w| **w > f64::from(max_wait)).count();
        table.row(vec![
            o.case.sizing.label(),
            flags.clone(),
            format!("{}/{}", f.tally.completed, f.sent),
            seconds(f.wait(0.5)),
            seconds(f.wait(0.95)),
            seconds(f.wait(1.0)),
            over.to_string(),
            format!("{:.0}", f.worker_seconds),
            if work > 0.0 {
                format!("{:.2}", f.worker_seconds / work)
            } else {
                "-".to_string()
            },
            o.path.matches("->").count().to_string(),
            f.peak_replicas.to_string(),
            seconds(o.wait_learned_at),
        ]);
    }
    table
}

/// The load as an arrivals CSV (`arrival,duration`, seconds from the first send).
pub fn arrivals_csv(load: &Load) -> String {
    let mut csv = format!(
        "# closed-loop scenario 5: {}\narrival,duration\n",
        load.label
    );
    for wave in &load.waves {
        let at = wave.at.as_secs_f64();
        for (i, seconds) in wave.seconds.iter().enumerate() {
            let offset = wave.offsets.get(i).copied().unwrap_or(0.0);
            csv.push_str(&format!("{:.3},{seconds:.1}\n", at + offset));
        }
    }
    csv
}

/// The trace's phases as `rate:seconds` pairs, e.g. `0.05:60,0.3:30`.
pub fn parse_phases(text: &str) -> Result<Vec<(f64, f64)>> {
    text.split(',')
        .map(|phase| {
            let (rate, length) = phase
                .split_once(':')
                .ok_or_else(|| anyhow::anyhow!("phase {phase:?} is not RATE:SECONDS"))?;
            let rate: f64 = rate.trim().parse()?;
            let length: f64 = length.trim().parse()?;
            anyhow::ensure!(
                rate >= 0.0 && length > 0.0,
                "phase {phase:?}: a rate >= 0 and seconds > 0"
            );
            Ok((rate, length))
        })
        .collect()
}

/// Runs scenario 5 and emits its section.
pub async fn scenario(args: &Args, dir: &std::path::Path, report: &mut Report) -> Result<()> {
    let phases = parse_phases(&args.wait_phases)?;
    let (shortest, longest) = match args.wait_task_seconds[..] {
        [a, b] if a > 0.0 && a <= b => (a, b),
        _ => anyhow::bail!("--wait-task-seconds takes SHORTEST,LONGEST"),
    };
    let load = Load::poisson(args.wait_seed, &phases, shortest, longest);
    let length: f64 = phases.iter().map(|(_, s)| s).sum();
    let scenario = WaitScenario {
        load,
        start_delay: Duration::from_secs(args.wait_start_delay),
        max_wait: args.wait_max_wait,
        max_replicas: 20,
        targets: args.wait_targets.clone(),
        // The trace, the 600 s delay of the default-flag practo run, and some.
        timeout: Duration::from_secs_f64(length + 900.0),
        redis_port: args.redis_port,
    };
    // The trace as `simulate compare --arrivals` reads it, for the rules the closed loop
    // cannot run (KEDA's) and the offline bound.
    let trace_file = args
        .report
        .as_ref()
        .map(|r| r.with_extension("wait-trace.csv"));
    if let Some(path) = &trace_file {
        std::fs::write(path, arrivals_csv(&scenario.load))?;
    }
    let mut outcomes = Vec::new();
    for run in scenario.runs() {
        eprintln!("wait: {}, {}", run.sizing.label(), run.flags.label());
        let outcome = scenario.run(&run, dir).await?;
        eprintln!("  {}", crate::scale_in_report::summary_line(&outcome));
        outcomes.push((run.flags.label().to_string(), outcome));
    }
    report.emit(&format!(
        "\n## Scenario 5: waits and worker-seconds under Poisson arrivals (seed {}; {}; {} tasks, \
         {:.0} task-seconds; Redis, task_acks_late, prefetch 1, one slot per pod; a pod's worker \
         starts {} s after the pod; min 0, max 20)\n",
        args.wait_seed,
        scenario.load.label,
        scenario.load.tasks(),
        scenario.load.work(),
        args.wait_start_delay
    ));
    report.emit(&table(&outcomes, args.wait_max_wait).render());
    report.emit("");
    if let Some(path) = &trace_file {
        report.emit(&format!(
            "The trace: {} (replay it with `workerpodautoscaler simulate compare --arrivals`).\n",
            path.display()
        ));
    }
    for (flags, o) in &outcomes {
        report.emit(&format!(
            "- {} ({flags}): replicas {}; reasons {}",
            o.case.sizing.label(),
            o.path,
            o.reasons.join(", ")
        ));
    }
    Ok(())
}
