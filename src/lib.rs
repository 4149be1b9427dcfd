//! worker-pod-autoscaler: scales worker Deployments on the backlog of their message queues.
//!
//! Data flows one way: `queue` (providers, registry) -> `scaler` (pure decision) ->
//! `controller` (Kubernetes I/O). `crd` holds the WorkerPodAutoScaler types shared by all.
//! `workers` listens to Celery worker events (who is alive, how many tasks each runs) on the
//! broker of a queue.

#![forbid(unsafe_code)]

pub mod admin;
pub mod controller;
pub mod crd;
pub mod logging;
pub mod queue;
pub mod scaler;
pub mod simulate;
mod sync;
pub mod workers;
