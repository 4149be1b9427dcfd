//! The drain's writes, made before the scale: resume (consume again, then drop the
//! annotation) and start (annotate with the deadline, then cancel the consumers). The
//! annotation goes on before the cancel and comes off after the resume, so that a
//! controller stopping at any point leaves every non-consuming worker's pod annotated,
//! and its successor resumes it. Failures are logged once per reason and never stop the
//! reconcile: a victim that was not cancelled only drains late (or is kept at the bound).

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};
use tracing::{info, warn};

use super::api_errors::Seen;
use super::context::Context;
use super::drain::{DrainChannel, Victim};
use super::drain_observe::CONNECT_TIMEOUT;
use super::key::WpaKey;
use super::plan_drain::DrainWrites;
use super::pods::DRAINING_ANNOTATION;
use crate::workers::drain::Mailbox;

/// Steps of [`Context::failures`] the drain's writes are kept under.
const RESUME: &str = "drain-resume";
const START: &str = "drain-start";

/// Makes the drain's writes and remembers what the plan decided.
pub async fn apply_drain(ctx: &Context, key: &WpaKey, channel: &DrainChannel, writes: DrainWrites) {
    let mailbox = Mailbox::new(channel.source.clone(), CONNECT_TIMEOUT);
    if !writes.resume.is_empty() {
        let outcome = resume(ctx, key, &mailbox, &channel.queues, &writes.resume).await;
        logged(ctx, key, RESUME, outcome, "resumed", &writes.resume);
    }
    if let Some(drain) = &writes.start {
        let deadline = drain.deadline.to_string();
        let outcome = start(
            ctx,
            key,
            &mailbox,
            &channel.queues,
            &drain.victims,
            &deadline,
        )
        .await;
        logged(ctx, key, START, outcome, "drain started", &drain.victims);
    }
    ctx.memories.remember_drain(key, &writes.remember);
}

async fn resume(
    ctx: &Context,
    key: &WpaKey,
    mailbox: &Mailbox,
    queues: &[String],
    victims: &[Victim],
) -> Result<(), String> {
    let nodes = nodes_of(victims);
    // Never without names: a command without a destination reaches every worker.
    if !nodes.is_empty() {
        mailbox
            .resume(&nodes, queues)
            .await
            .map_err(|e| e.to_string())?;
    }
    for victim in victims {
        annotate(ctx, key, &victim.pod, Value::Null).await?;
    }
    Ok(())
}

async fn start(
    ctx: &Context,
    key: &WpaKey,
    mailbox: &Mailbox,
    queues: &[String],
    victims: &[Victim],
    deadline: &str,
) -> Result<(), String> {
    for victim in victims {
        annotate(ctx, key, &victim.pod, Value::from(deadline)).await?;
    }
    let nodes = nodes_of(victims);
    if nodes.is_empty() {
        return Ok(());
    }
    mailbox
        .cancel(&nodes, queues)
        .await
        .map_err(|e| e.to_string())
}

fn nodes_of(victims: &[Victim]) -> Vec<String> {
    victims
        .iter()
        .flat_map(|v| v.nodes.iter().cloned())
        .collect()
}

/// Sets (a string) or removes (null) the draining annotation; a pod gone needs neither.
async fn annotate(ctx: &Context, key: &WpaKey, pod: &str, value: Value) -> Result<(), String> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), key.namespace());
    let patch = Patch::Merge(json!({"metadata": {"annotations": {DRAINING_ANNOTATION: value}}}));
    match pods.patch(pod, &PatchParams::default(), &patch).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(e) => Err(format!("cannot annotate pod {pod}: {e}")),
    }
}

fn logged(
    ctx: &Context,
    key: &WpaKey,
    step: &'static str,
    outcome: Result<(), String>,
    done: &str,
    victims: &[Victim],
) {
    let pods: Vec<&str> = victims.iter().map(|v| v.pod.as_str()).collect();
    match outcome {
        Ok(()) => {
            info!(pods = ?pods, "{done}");
            if let Some(reason) = ctx.failures.succeeded(&key.to_string(), step) {
                info!(failed_with = %reason, step, "drain writes work again");
            }
        }
        Err(reason) => {
            if ctx.failures.failed(&key.to_string(), step, &reason) == Seen::New {
                warn!(error = %reason, step, pods = ?pods, "drain write failed");
            }
        }
    }
}
