//! The Pod objects the simulated controllers create: named, labelled and owned as the real
//! ReplicaSet and StatefulSet controllers do, and already Running and Ready (there is no
//! scheduler or kubelet), each with its own IP.

use serde_json::{Value, json};

use super::super::objects::now_timestamp;
use super::WorkloadKind;

/// The single node every simulated Pod runs on.
pub const NODE: &str = "apiserver-double-node";

/// Lowercase alphanumerics without vowels and look-alikes, as Kubernetes uses for
/// generated name suffixes and pod-template-hash values.
const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// 64-bit FNV-1a: a stable hash (std's `DefaultHasher` may change between releases).
fn fnv1a(seed: u64, text: &str) -> u64 {
    text.bytes().fold(seed, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

fn encode(mut n: u64, len: usize) -> String {
    let base = ALPHABET.len() as u64;
    (0..len)
        .map(|_| {
            let c = ALPHABET[(n % base) as usize];
            n /= base;
            char::from(c)
        })
        .collect()
}

/// The fake pod-template-hash of a Deployment, from its uid (10 characters, like real ones).
pub fn template_hash(deployment_uid: &str) -> String {
    encode(fnv1a(FNV_OFFSET, deployment_uid), 10)
}

/// A uid derived from `seed`, for the ReplicaSet a Deployment would have.
pub fn derived_uid(seed: &str) -> String {
    let hex = format!(
        "{:016x}{:016x}",
        fnv1a(FNV_OFFSET, seed),
        fnv1a(FNV_OFFSET ^ 0x5bd1_e995, seed)
    );
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// Five random characters, like a generateName suffix.
pub fn random_suffix() -> String {
    (0..5)
        .map(|_| char::from(ALPHABET[usize::from(rand::random::<u8>()) % ALPHABET.len()]))
        .collect()
}

/// The name of the (not stored) ReplicaSet owning a Deployment's Pods.
pub fn replicaset_name(deployment: &str, hash: &str) -> String {
    format!("{deployment}-{hash}")
}

/// `status.podIP`, or "".
pub fn pod_ip(pod: &Value) -> &str {
    pod.pointer("/status/podIP")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// What a new Pod needs to know about its workload.
pub struct Owner<'a> {
    pub kind: WorkloadKind,
    pub workload: &'a Value,
    pub namespace: &'a str,
    pub name: &'a str,
    pub uid: &'a str,
}

/// A new Running, Ready Pod named `pod_name` for `owner`, with IP `ip`.
pub fn pod(owner: &Owner<'_>, pod_name: &str, ip: &str) -> Value {
    let template = owner.workload.pointer("/spec/template");
    let field = |key: &str| {
        template
            .and_then(|t| t.pointer(key))
            .cloned()
            .unwrap_or_else(|| json!({}))
    };
    let mut labels = field("/metadata/labels");
    let (owner_kind, owner_name, owner_uid) = match owner.kind {
        WorkloadKind::Deployment => {
            let hash = template_hash(owner.uid);
            labels["pod-template-hash"] = Value::from(hash.clone());
            (
                "ReplicaSet",
                replicaset_name(owner.name, &hash),
                derived_uid(&format!("{}/replicaset", owner.uid)),
            )
        }
        WorkloadKind::ReplicaSet => ("ReplicaSet", owner.name.to_string(), owner.uid.to_string()),
        WorkloadKind::StatefulSet => {
            labels["statefulset.kubernetes.io/pod-name"] = Value::from(pod_name);
            if let Some(ordinal) = pod_name.rsplit('-').next() {
                labels["apps.kubernetes.io/pod-index"] = Value::from(ordinal);
            }
            ("StatefulSet", owner.name.to_string(), owner.uid.to_string())
        }
    };
    let now = now_timestamp();
    let mut spec = field("/spec");
    spec["nodeName"] = Value::from(NODE);
    let condition = |kind: &str| json!({"type": kind, "status": "True", "lastTransitionTime": now});
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod_name,
            "namespace": owner.namespace,
            "labels": labels,
            "annotations": field("/metadata/annotations"),
            "ownerReferences": [{
                "apiVersion": "apps/v1",
                "kind": owner_kind,
                "name": owner_name,
                "uid": owner_uid,
                "controller": true,
                "blockOwnerDeletion": true,
            }],
        },
        "spec": spec,
        "status": {
            "phase": "Running",
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "hostIP": "192.168.0.1",
            "startTime": now,
            "conditions": [
                condition("PodScheduled"),
                condition("Initialized"),
                condition("ContainersReady"),
                condition("Ready"),
            ],
        },
    })
}
