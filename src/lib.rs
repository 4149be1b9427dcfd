//! worker-pod-autoscaler: scales worker Deployments on the backlog of their message queues.
//!
//! Data flows one way: `queue` (providers, registry) -> `scaler` (pure decision) ->
//! `controller` (Kubernetes I/O). `crd` holds the WorkerPodAutoScaler types shared by all.

#![forbid(unsafe_code)]

pub mod admin;
pub mod controller;
pub mod crd;
pub mod queue;
pub mod scaler;
pub mod simulate;
