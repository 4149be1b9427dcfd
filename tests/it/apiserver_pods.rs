//! The API server double's simulated Pods, driven with the real kube client: Pods follow a
//! workload's replicas (also through `/scale`), a scale-down removes them in the ReplicaSet
//! controller's order (pod-deletion-cost, readiness, age), StatefulSets remove their highest
//! ordinals, and removed Pods terminate before they go.

use crate::support;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use support::apiserver::{ApiServerDouble, Gvr, PodEvent, objects};
use tokio::sync::broadcast;

const NS: &str = "pods";
const WAIT: Duration = Duration::from_secs(10);

async fn start() -> (ApiServerDouble, Client) {
    let server = ApiServerDouble::start().await.expect("server starts");
    server.simulate_pods(true);
    let client = server.client().expect("client builds");
    (server, client)
}

async fn scale<K>(api: &Api<K>, name: &str, replicas: i32)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.patch_scale(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": replicas}})),
    )
    .await
    .expect("scale");
}

/// Pods matching `app=<app>` as the kube client lists them, terminating ones excluded.
async fn live_pods(client: &Client, app: &str) -> Vec<Pod> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    pods.list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .expect("list pods")
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect()
}

fn names(pods: &[Pod]) -> HashSet<String> {
    pods.iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect()
}

fn set(names: &[&str]) -> HashSet<String> {
    names.iter().map(|n| n.to_string()).collect()
}

/// The next event, failing after [`WAIT`].
async fn next_event(events: &mut broadcast::Receiver<PodEvent>) -> PodEvent {
    tokio::time::timeout(WAIT, events.recv())
        .await
        .expect("a pod event in time")
        .expect("pod events keep coming")
}

#[tokio::test]
async fn deployment_pods_follow_the_scale_subresource() {
    let (server, client) = start().await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NS);
    let created: Deployment = serde_json::from_value(objects::deployment(NS, "worker", 0)).unwrap();
    deployments
        .create(&PostParams::default(), &created)
        .await
        .unwrap();
    assert!(live_pods(&client, "worker").await.is_empty());

    scale(&deployments, "worker", 4).await;
    // The Pods exist once the scale request has been answered.
    let pods = live_pods(&client, "worker").await;
    assert_eq!(pods.len(), 4);
    let uid = deployments
        .get("worker")
        .await
        .unwrap()
        .metadata
        .uid
        .unwrap();
    let mut ips = HashSet::new();
    for pod in &pods {
        let name = pod.metadata.name.as_deref().unwrap();
        let labels = pod.metadata.labels.as_ref().unwrap();
        let hash = &labels["pod-template-hash"];
        // <deployment>-<pod-template-hash>-<5 random>
        let suffix = name
            .strip_prefix(&format!("worker-{hash}-"))
            .unwrap_or_else(|| panic!("{name} is not worker-{hash}-xxxxx"));
        assert_eq!(suffix.len(), 5);
        assert!(
            suffix
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        );
        assert_eq!(labels["app"], "worker");
        let owner = &pod.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.controller),
            ("ReplicaSet", Some(true))
        );
        assert_eq!(owner.name, format!("worker-{hash}"));
        assert_ne!(owner.uid, uid, "the owner is the (unstored) ReplicaSet");
        assert!(pod.metadata.creation_timestamp.is_some());
        let status = pod.status.as_ref().unwrap();
        assert_eq!(status.phase.as_deref(), Some("Running"));
        let ready = status
            .conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == "Ready");
        assert_eq!(ready.map(|c| c.status.as_str()), Some("True"));
        ips.insert(status.pod_ip.clone().unwrap());
    }
    assert_eq!(ips.len(), 4, "every Pod has its own IP");

    scale(&deployments, "worker", 2).await;
    let after = live_pods(&client, "worker").await;
    assert_eq!(after.len(), 2);
    assert!(
        names(&after).is_subset(&names(&pods)),
        "scale-down creates nothing"
    );
    // The default grace is zero: the removed Pods are gone, not just terminating.
    let pods_api: Api<Pod> = Api::namespaced(client.clone(), NS);
    assert_eq!(
        pods_api
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        2
    );
    assert_eq!(
        server.live_pod_names(&Gvr::DEPLOYMENTS, NS, "worker").len(),
        2
    );
}

#[tokio::test]
async fn without_deletion_costs_the_newest_pods_go_first() {
    let (server, client) = start().await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NS);
    server.insert(objects::deployment(NS, "worker", 2)).unwrap();
    let first = server.live_pod_names(&Gvr::DEPLOYMENTS, NS, "worker");
    // A later second, so the creation timestamps (second precision) differ too.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    scale(&deployments, "worker", 4).await;
    assert_eq!(live_pods(&client, "worker").await.len(), 4);

    scale(&deployments, "worker", 2).await;
    assert_eq!(
        names(&live_pods(&client, "worker").await),
        first.into_iter().collect()
    );
}

#[tokio::test]
async fn pods_with_a_higher_deletion_cost_survive_a_scale_down() {
    let (server, client) = start().await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NS);
    server.insert(objects::deployment(NS, "worker", 4)).unwrap();
    let pods = server.live_pod_names(&Gvr::DEPLOYMENTS, NS, "worker");
    assert_eq!(pods.len(), 4);
    // The two newest would go first without costs; protect them: one annotated over HTTP
    // as the controller will, one through the test helper.
    let (newest, older) = (&pods[3], &pods[2]);
    let pods_api: Api<Pod> = Api::namespaced(client.clone(), NS);
    pods_api
        .patch(
            newest,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {
                "controller.kubernetes.io/pod-deletion-cost": "100"}}})),
        )
        .await
        .unwrap();
    server.set_pod_deletion_cost(NS, older, 50).unwrap();
    // An invalid cost counts as 0, like no cost.
    server
        .set_pod_annotation(
            NS,
            &pods[0],
            "controller.kubernetes.io/pod-deletion-cost",
            Some("high"),
        )
        .unwrap();
    let summaries = server.pods_of(&Gvr::DEPLOYMENTS, NS, "worker");
    let costs: Vec<i32> = summaries.iter().map(|p| p.cost()).collect();
    assert_eq!(costs, vec![0, 0, 50, 100]);

    let mut events = server.pod_events();
    scale(&deployments, "worker", 2).await;
    assert_eq!(
        names(&live_pods(&client, "worker").await),
        set(&[newest, older])
    );
    // Victims are reported as they are chosen: terminating, then deleted.
    let mut terminating = Vec::new();
    for _ in 0..4 {
        match next_event(&mut events).await {
            PodEvent::Terminating { pod } => terminating.push(pod.name),
            PodEvent::Deleted { pod } => assert!(terminating.contains(&pod.name)),
            other => panic!("unexpected {other:?}"),
        }
    }
    // Both zero-cost Pods go; the newer of them first.
    assert_eq!(terminating, vec![pods[1].clone(), pods[0].clone()]);
}

#[tokio::test]
async fn a_not_ready_pod_goes_before_cheaper_ready_ones() {
    let (server, client) = start().await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NS);
    server.insert(objects::deployment(NS, "worker", 3)).unwrap();
    let pods = server.live_pod_names(&Gvr::DEPLOYMENTS, NS, "worker");
    server.set_pod_deletion_cost(NS, &pods[0], 1000).unwrap();
    server.set_pod_ready(NS, &pods[0], false).unwrap();
    scale(&deployments, "worker", 2).await;
    assert_eq!(
        names(&live_pods(&client, "worker").await),
        set(&[&pods[1], &pods[2]])
    );
}

#[tokio::test]
async fn statefulsets_remove_the_highest_ordinals_whatever_their_cost() {
    let (server, client) = start().await;
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), NS);
    server.insert(objects::statefulset(NS, "db", 0)).unwrap();
    scale(&sets, "db", 4).await;
    assert_eq!(
        names(&live_pods(&client, "db").await),
        set(&["db-0", "db-1", "db-2", "db-3"])
    );
    server.set_pod_deletion_cost(NS, "db-3", 1000).unwrap();
    server.set_pod_deletion_cost(NS, "db-0", -1000).unwrap();

    let mut events = server.pod_events();
    scale(&sets, "db", 2).await;
    assert_eq!(
        names(&live_pods(&client, "db").await),
        set(&["db-0", "db-1"])
    );
    let mut terminating = Vec::new();
    for _ in 0..4 {
        if let PodEvent::Terminating { pod } = next_event(&mut events).await {
            terminating.push(pod.name);
        }
    }
    assert_eq!(terminating, vec!["db-3", "db-2"]);
}

#[tokio::test]
async fn removed_pods_terminate_then_disappear_after_the_grace() {
    let (server, client) = start().await;
    let grace = Duration::from_millis(800);
    server.set_pod_termination_grace(grace);
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), NS);
    server.insert(objects::statefulset(NS, "db", 2)).unwrap();
    let mut events = server.pod_events();

    scale(&sets, "db", 1).await;
    let scaled_at = Instant::now();
    let PodEvent::Terminating { pod } = next_event(&mut events).await else {
        panic!("the removed Pod terminates first");
    };
    assert_eq!(pod.name, "db-1");
    let pods_api: Api<Pod> = Api::namespaced(client.clone(), NS);
    let terminating = pods_api
        .get("db-1")
        .await
        .expect("still there while terminating");
    assert!(terminating.metadata.deletion_timestamp.is_some());
    let summary = server.pods_of(&Gvr::STATEFULSETS, NS, "db");
    assert_eq!(
        summary
            .iter()
            .map(|p| (p.name.as_str(), p.terminating))
            .collect::<Vec<_>>(),
        vec![("db-0", false), ("db-1", true)]
    );

    // Scaling back up while db-1 terminates: its name is taken until it is gone.
    scale(&sets, "db", 2).await;
    assert!(
        matches!(next_event(&mut events).await, PodEvent::Deleted { pod } if pod.name == "db-1")
    );
    assert!(
        scaled_at.elapsed() >= grace,
        "deleted after the grace, not before"
    );
    match next_event(&mut events).await {
        PodEvent::Created { pod, .. } => assert_eq!(pod.name, "db-1"),
        other => panic!("expected db-1 again, got {other:?}"),
    }
    assert_eq!(
        names(&live_pods(&client, "db").await),
        set(&["db-0", "db-1"])
    );
}

#[tokio::test]
async fn a_deleted_pod_is_replaced_and_pods_are_off_by_default() {
    let (server, client) = start().await;
    server.insert(objects::deployment(NS, "worker", 2)).unwrap();
    let before = server.live_pod_names(&Gvr::DEPLOYMENTS, NS, "worker");
    let pods_api: Api<Pod> = Api::namespaced(client.clone(), NS);
    pods_api
        .delete(&before[0], &DeleteParams::default())
        .await
        .unwrap();
    let after = server.live_pod_names(&Gvr::DEPLOYMENTS, NS, "worker");
    assert_eq!(after.len(), 2);
    assert!(after.contains(&before[1]) && !after.contains(&before[0]));

    let plain = ApiServerDouble::start().await.unwrap();
    plain.insert(objects::deployment(NS, "worker", 3)).unwrap();
    assert!(plain.list(&Gvr::PODS, Some(NS)).is_empty());
}
