//! The drain's part of a plan, pure: from the drain step (`drain.rs`) and the pods left
//! draining by an earlier run, whether the scale goes ahead, waits or goes to another
//! count, what to write (annotate and cancel, resume and unannotate) and what to remember.

use jiff::{SignedDuration, Timestamp};
use kube::runtime::events::EventType;

use super::drain::{self, DrainInput, DrainSettings, Remember, Step, Victim};
use super::observed::{DrainObserved, WorkersObserved};
use super::pods::{ClassifiedPod, runs_in};

/// Event reasons of the drain.
pub const DRAIN_STARTED: &str = "DrainStarted";
pub const DRAINED: &str = "Drained";
pub const DRAIN_CANCELLED: &str = "DrainCancelled";
/// The `AbleToScale` reason while a drain holds the scale.
pub const DRAINING: &str = "Draining";

/// What the drain does to the planned scale.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DrainScale {
    /// As without drain.
    Pass,
    /// No scale now (a drain runs, or workers are being resumed first): why.
    Hold(String),
    /// Scale to `to`, the `drained` pods removed first.
    Finish { to: i32, drained: Vec<String> },
}

/// The drain's writes, made before the scale.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DrainWrites {
    /// Annotate the victims with the deadline, then cancel their consumers.
    pub start: Option<drain::Drain>,
    /// Consume again, then drop the annotation.
    pub resume: Vec<Victim>,
    pub remember: Remember,
}

/// The drain's part of a plan.
#[derive(Debug, Clone, PartialEq)]
pub struct DrainOutcome {
    pub scale: DrainScale,
    pub writes: DrainWrites,
    pub events: Vec<(EventType, &'static str, String)>,
    /// Pods being drained after this plan (the status and the gauge).
    pub draining: usize,
}

impl DrainOutcome {
    fn pass() -> Self {
        Self {
            scale: DrainScale::Pass,
            writes: DrainWrites::default(),
            events: Vec::new(),
            draining: 0,
        }
    }
}

/// What the drain's plan depends on.
#[derive(Debug, Clone, Copy)]
pub struct DrainPlanInput<'a> {
    pub drain: Option<&'a DrainObserved>,
    pub workers: Option<&'a WorkersObserved>,
    pub settings: DrainSettings,
    pub current: i32,
    /// What the decision wants and may apply now (the current count when paused or in a
    /// dry run: a drain then stops).
    pub desired: i32,
    /// The target, described for messages.
    pub target: &'a str,
    pub now: Timestamp,
}

fn names(victims: &[Victim]) -> String {
    victims
        .iter()
        .map(|v| v.pod.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The drain's part of the plan for what was observed.
pub fn plan_drain(input: &DrainPlanInput<'_>) -> DrainOutcome {
    let mut out = DrainOutcome::pass();
    let Some(observed) = input.drain.filter(|_| input.settings.enabled) else {
        return out;
    };
    let (pods, workers) = input
        .workers
        .map_or((&[][..], &[][..]), |w| (&w.pods[..], &w.target_workers[..]));
    let scale_in = input.desired < input.current;

    // Pods an earlier run left draining: consume again first. Only those whose workers
    // report (their node names are needed; a command without names would reach every
    // worker on the broker); the others wait for their heartbeats.
    let style = observed.channel.style();
    let annotated: Vec<String> = pods
        .iter()
        .filter(|p| p.pod.draining.is_some() && !observed.removing.contains(&p.pod.name))
        .map(|p| p.pod.name.clone())
        .collect();
    let orphans = drain::orphans(&annotated, observed.live.as_ref());
    if style.irreversible {
        if observed.live.is_none() && !orphans.is_empty() {
            adopt(input, &orphans, pods, &mut out);
            return out;
        }
    } else {
        for pod in orphans {
            let nodes: Vec<String> = workers
                .iter()
                .filter(|w| runs_in(&w.hostname, pod))
                .map(|w| w.hostname.clone())
                .collect();
            if !nodes.is_empty() {
                out.writes.resume.push(Victim {
                    pod: pod.to_string(),
                    nodes,
                });
            }
        }
    }
    if !out.writes.resume.is_empty() && observed.live.is_none() {
        let resumed = names(&out.writes.resume);
        out.events.push((
            EventType::Normal,
            DRAIN_CANCELLED,
            format!("pods left draining by an earlier run consume again: {resumed}"),
        ));
        if scale_in {
            // Decided afresh once they consume again (the next reconcile, a second away).
            out.scale = DrainScale::Hold(format!(
                "resuming the workers of pods left draining ({resumed}) before a scale-in"
            ));
        }
        return out;
    }

    let step = drain::step(&DrainInput {
        drain: observed.live.as_ref(),
        current: input.current,
        desired: input.desired,
        pods,
        workers,
        drained: &observed.drained,
        now: input.now,
        bound: input.settings.bound(pods),
        style,
    });
    let (current, target) = (input.current, input.target);
    match step {
        Step::Pass => {}
        Step::Start(started) => {
            let victims = names(&started.victims);
            out.draining = started.victims.len();
            out.scale = DrainScale::Hold(format!(
                "draining {} pods before scaling from {current} to {}: {victims}",
                started.victims.len(),
                input.desired
            ));
            out.events.push((
                EventType::Normal,
                DRAIN_STARTED,
                format!(
                    "draining {target}'s pods {victims} (until {}) before scaling from {current} to {}",
                    started.deadline, input.desired
                ),
            ));
            out.writes.start = Some(started.clone());
            out.writes.remember = Remember::Start(started);
        }
        Step::Wait => {
            let live = observed.live.as_ref().map_or(&[][..], |d| &d.victims[..]);
            out.draining = live.len();
            let waiting: Vec<&str> = live
                .iter()
                .filter(|v| !observed.drained.contains(&v.pod))
                .map(|v| v.pod.as_str())
                .collect();
            out.scale = DrainScale::Hold(format!(
                "waiting for {} of {} pods to finish their tasks: {}",
                waiting.len(),
                live.len(),
                waiting.join(", ")
            ));
        }
        Step::Finish {
            to,
            drained,
            kept,
            forced,
        } => {
            let mut gone: Vec<String> = drained.iter().map(|v| v.pod.clone()).collect();
            let mut note = format!("drained {}", gone.join(", "));
            if !kept.is_empty() {
                note.push_str(&format!(
                    "; still busy at the bound, kept: {}",
                    names(&kept)
                ));
            }
            if !forced.is_empty() {
                note.push_str(&format!(
                    "; still busy at the bound but told to stop for good, removed too: {}",
                    names(&forced)
                ));
                gone.extend(forced.iter().map(|v| v.pod.clone()));
            }
            out.writes.resume = kept;
            out.writes.remember = Remember::Finish {
                to,
                removing: gone.clone(),
            };
            if to < current {
                note.push_str(&format!("; scaling {target} from {current} to {to}"));
                out.scale = DrainScale::Finish { to, drained: gone };
            } else {
                out.scale = DrainScale::Hold(
                    "no pod drained within the bound; the scale-in is decided again".to_string(),
                );
            }
            out.events.push((EventType::Normal, DRAINED, note));
        }
        Step::Cancel(victims) => {
            out.events.push((
                EventType::Normal,
                DRAIN_CANCELLED,
                format!(
                    "the scale-in is off or changed; pods consume again: {}",
                    names(&victims)
                ),
            ));
            out.writes.resume = victims;
            out.writes.remember = Remember::Clear;
            if scale_in {
                out.scale = DrainScale::Hold(
                    "a drain was cancelled (the replicas changed or a victim went); the \
                     scale-in is decided again"
                        .to_string(),
                );
            }
        }
    }
    out
}

/// Pods an earlier run left draining whose workers cannot take work again (Sidekiq): the
/// drain is taken over as this run's own, from the current replicas, and their workers are
/// told to stop once more (the earlier run may have stopped between the annotation and the
/// signal; a quiet process ignores a second one). They are then removed as any victim of
/// an irreversible drain.
fn adopt(
    input: &DrainPlanInput<'_>,
    orphans: &[&str],
    pods: &[ClassifiedPod],
    out: &mut DrainOutcome,
) {
    let victims: Vec<Victim> = orphans
        .iter()
        .map(|pod| Victim {
            pod: pod.to_string(),
            nodes: vec![pod.to_string()],
        })
        .collect();
    let bound = SignedDuration::try_from(input.settings.bound(pods)).unwrap_or(SignedDuration::MAX);
    let adopted = drain::Drain {
        victims,
        from: input.current,
        undrainable: 0,
        deadline: input.now.saturating_add(bound).unwrap_or(Timestamp::MAX),
    };
    let listed = names(&adopted.victims);
    out.draining = adopted.victims.len();
    out.events.push((
        EventType::Normal,
        DRAIN_STARTED,
        format!(
            "pods left draining by an earlier run cannot take work again; draining them to the end (until {}): {listed}",
            adopted.deadline
        ),
    ));
    out.scale = DrainScale::Hold(format!(
        "finishing the drain of pods left draining by an earlier run: {listed}"
    ));
    out.writes.start = Some(adopted.clone());
    out.writes.remember = Remember::Start(adopted);
}
