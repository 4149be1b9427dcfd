//! Leader election over a coordination.k8s.io Lease (kube-lease-manager).

use std::future::Future;

use kube::Client;
use kube_lease_manager::LeaseManagerBuilder;
use tracing::{error, info};

use super::shutdown::Shutdown;
use super::{RunArgs, RunError};
use crate::admin::Readiness;

/// Waits for the lease, then runs `work` while holding it. Losing the lease ends the
/// process's leadership for good (the caller exits, the standby takes over).
pub async fn run_as_leader<F, Fut>(
    args: &RunArgs,
    client: Client,
    readiness: Readiness,
    shutdown: Shutdown,
    work: F,
) -> Result<(), RunError>
where
    F: FnOnce(Client) -> Fut,
    Fut: Future<Output = ()>,
{
    let identity = std::env::var("POD_NAME")
        .unwrap_or_else(|_| format!("workerpodautoscaler-{}", std::process::id()));
    let duration = args.leader_election_lease_duration;
    let manager = LeaseManagerBuilder::new(client.clone(), &args.leader_election_lease_name)
        .with_namespace(args.lease_namespace())
        .with_identity(identity.clone())
        .with_duration(duration)
        .with_grace((duration / 3).max(1))
        .build()
        .await
        .map_err(|e| RunError::Lease(e.to_string()))?;
    let (mut leader, lease_task) = manager.watch().await;
    readiness.set_lease_known();
    // A standby serves nothing that needs the caches; it is ready once it knows it waits.
    readiness.set_caches_synced();
    info!(%identity, lease = %args.leader_election_lease_name, "waiting for leadership");
    let became_leader = async {
        while !*leader.borrow_and_update() {
            if leader.changed().await.is_err() {
                return Err(RunError::Lease("the lease task ended".to_string()));
            }
        }
        Ok(())
    };
    // A standby told to stop has nothing in flight: it just leaves.
    let waited = tokio::select! {
        result = became_leader => Some(result),
        () = shutdown.clone().wait() => None,
    };
    match waited {
        Some(result) => result?,
        None => {
            info!(%identity, "shutting down before becoming the leader");
            drop(leader);
            let _ = lease_task.await;
            return Ok(());
        }
    }
    info!(%identity, "became the leader");
    let lost = async {
        loop {
            if leader.changed().await.is_err() || !*leader.borrow_and_update() {
                return;
            }
        }
    };
    let outcome = tokio::select! {
        () = work(client) => Ok(()),
        () = lost => {
            // Whatever is still waiting to be written is not sent: the new leader decides now.
            shutdown.request();
            error!("lost the leader lease");
            Err(RunError::LeadershipLost)
        }
    };
    drop(leader);
    let _ = lease_task.await;
    outcome
}
