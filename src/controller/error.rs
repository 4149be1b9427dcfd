//! The controller's two error types: a failed reconcile (retried) and a failed run (exits).

use super::config;
use super::target;

/// Reconcile failures that are retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Target(#[from] target::TargetError),
    #[error("cannot set the deletion cost of pod {pod}: {}", super::api_errors::reason(.source))]
    PodCost {
        pod: String,
        #[source]
        source: kube::Error,
    },
}

/// Errors that stop `run`.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Flag(#[from] config::FlagError),
    #[error("cannot load the kube config: {0}")]
    KubeConfig(String),
    #[error("cannot create the Kubernetes client: {0}")]
    Client(#[source] kube::Error),
    #[error("cannot set up metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("cannot serve the admin endpoints on {addr}: {source}")]
    Admin {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("leader election failed: {0}")]
    Lease(String),
    #[error("lost the leader lease; exiting so that a standby takes over")]
    LeadershipLost,
}
