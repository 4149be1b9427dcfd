//! The scale target: which object a WPA scales, how many replicas it has, and the PATCH of
//! its `scale` subresource.
//!
//! Deployments are read from a watch cache (the controller watches them anyway to notice
//! changes); ReplicaSets and generic targets are read through the API on each reconcile.
//! Every write goes through `/scale`, so the controller needs no update rights on the
//! targets themselves.

use std::collections::HashMap;
use std::sync::Mutex;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::autoscaling::v1::Scale;
use kube::Client;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind, Selector};
use kube::runtime::reflector::{ObjectRef, Store};
use serde_json::json;

use crate::crd::WorkerPodAutoScalerSpec;

/// What a WPA scales.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TargetRef {
    Deployment(String),
    ReplicaSet(String),
    /// Any resource with a /scale subresource, by apiVersion and kind.
    Generic {
        api_version: String,
        kind: String,
        name: String,
    },
}

impl TargetRef {
    /// The one target a spec names (the schema requires exactly one; this re-checks it for
    /// objects written before the schema was installed).
    pub fn from_spec(spec: &WorkerPodAutoScalerSpec) -> Result<TargetRef, String> {
        let non_empty =
            |v: &Option<String>| v.as_deref().filter(|s| !s.is_empty()).map(str::to_string);
        let mut targets = Vec::new();
        if let Some(name) = non_empty(&spec.deployment_name) {
            targets.push(TargetRef::Deployment(name));
        }
        if let Some(name) = non_empty(&spec.replica_set_name) {
            targets.push(TargetRef::ReplicaSet(name));
        }
        if let Some(r) = &spec.scale_target_ref {
            targets.push(match (r.api_version.as_str(), r.kind.as_str()) {
                ("apps/v1", "Deployment") => TargetRef::Deployment(r.name.clone()),
                ("apps/v1", "ReplicaSet") => TargetRef::ReplicaSet(r.name.clone()),
                _ => TargetRef::Generic {
                    api_version: r.api_version.clone(),
                    kind: r.kind.clone(),
                    name: r.name.clone(),
                },
            });
        }
        match targets.len() {
            1 => Ok(targets.remove(0)),
            0 => Err("no scale target: set deploymentName, replicaSetName or scaleTargetRef".to_string()),
            _ => Err("more than one scale target: set only one of deploymentName, replicaSetName and scaleTargetRef".to_string()),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            TargetRef::Deployment(name) => format!("Deployment {name}"),
            TargetRef::ReplicaSet(name) => format!("ReplicaSet {name}"),
            TargetRef::Generic { kind, name, .. } => format!("{kind} {name}"),
        }
    }
}

/// Replicas of the target as last seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TargetState {
    /// `.spec.replicas`: what the WPA scales.
    pub replicas: i32,
    /// Replicas available to do work (equal to the status replicas for generic targets).
    pub available: i32,
    /// The resourceVersion this was read at.
    pub version: Option<ResourceVersion>,
}

/// How to find a target's pods.
#[derive(Debug, Clone, PartialEq)]
pub struct PodSelector {
    pub selector: Selector,
    /// A StatefulSet's name: its pods are `<name>-<ordinal>` and go highest ordinal first.
    pub statefulset: Option<String>,
}

/// A target as read now.
#[derive(Debug, Clone)]
pub struct TargetRead {
    pub state: TargetState,
    /// `None` when the target's selector is missing or not understood.
    pub pods: Option<PodSelector>,
}

fn label_selector(
    selector: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>,
) -> Option<PodSelector> {
    let selector = Selector::try_from(selector?.clone()).ok()?;
    Some(PodSelector {
        selector,
        statefulset: None,
    })
}

/// A resourceVersion, as far as it can be compared. The API conventions call it opaque, but
/// every etcd-backed apiserver (and the test double) hands out etcd revisions: numbers that
/// grow with every write. Those tell an older cached read from a newer one; anything else is
/// kept as a fingerprint that only tells "same version or not".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceVersion {
    Revision(u64),
    Opaque(u64),
}

impl ResourceVersion {
    pub fn parse(version: &str) -> Self {
        match version.parse() {
            Ok(revision) => ResourceVersion::Revision(revision),
            Err(_) => {
                use std::hash::{Hash, Hasher};
                let mut hasher = std::collections::hash_map::DefaultHasher::new();
                version.hash(&mut hasher);
                ResourceVersion::Opaque(hasher.finish())
            }
        }
    }

    /// `Some(true)` when `self` is known to come before `other`; `None` when the two cannot
    /// be ordered.
    pub fn is_older_than(self, other: ResourceVersion) -> Option<bool> {
        match (self, other) {
            (ResourceVersion::Revision(a), ResourceVersion::Revision(b)) => Some(a < b),
            _ => None,
        }
    }
}

fn version_of(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Option<ResourceVersion> {
    meta.resource_version.as_deref().map(ResourceVersion::parse)
}

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("{0} not found")]
    NotFound(String),
    #[error("cannot resolve {api_version} {kind}: {detail}")]
    UnknownKind {
        api_version: String,
        kind: String,
        detail: String,
    },
    #[error("kubernetes API error on {target}: {}", super::api_errors::reason(.source))]
    Api {
        target: String,
        #[source]
        source: kube::Error,
    },
}

/// Reads and scales targets.
pub struct Targets {
    client: Client,
    deployments: Store<Deployment>,
    /// Discovery results for generic kinds, so each kind is resolved once.
    resources: Mutex<HashMap<(String, String), ApiResource>>,
}

impl Targets {
    pub fn new(client: Client, deployments: Store<Deployment>) -> Self {
        Self {
            client,
            deployments,
            resources: Mutex::new(HashMap::new()),
        }
    }

    pub async fn read(
        &self,
        namespace: &str,
        target: &TargetRef,
    ) -> Result<TargetRead, TargetError> {
        let api_error = |source: kube::Error| map_api_error(target, source);
        match target {
            TargetRef::Deployment(name) => {
                let cached = self
                    .deployments
                    .get(&ObjectRef::new(name).within(namespace));
                let deployment = match cached {
                    Some(d) => (*d).clone(),
                    // Not in the cache (yet): ask the API before calling it missing.
                    None => Api::<Deployment>::namespaced(self.client.clone(), namespace)
                        .get(name)
                        .await
                        .map_err(api_error)?,
                };
                let state = TargetState {
                    replicas: deployment
                        .spec
                        .as_ref()
                        .and_then(|s| s.replicas)
                        .unwrap_or(1),
                    available: deployment
                        .status
                        .as_ref()
                        .and_then(|s| s.available_replicas)
                        .unwrap_or(0),
                    version: version_of(&deployment.metadata),
                };
                Ok(TargetRead {
                    state,
                    pods: label_selector(deployment.spec.as_ref().map(|s| &s.selector)),
                })
            }
            TargetRef::ReplicaSet(name) => {
                let rs = Api::<ReplicaSet>::namespaced(self.client.clone(), namespace)
                    .get(name)
                    .await
                    .map_err(api_error)?;
                let state = TargetState {
                    replicas: rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
                    available: rs
                        .status
                        .as_ref()
                        .and_then(|s| s.available_replicas)
                        .unwrap_or(0),
                    version: version_of(&rs.metadata),
                };
                Ok(TargetRead {
                    state,
                    pods: label_selector(rs.spec.as_ref().map(|s| &s.selector)),
                })
            }
            TargetRef::Generic {
                api_version,
                kind,
                name,
            } => {
                let scale = self
                    .generic_api(namespace, target)
                    .await?
                    .get_scale(target_name(target))
                    .await
                    .map_err(api_error)?;
                let statefulset =
                    (api_version == "apps/v1" && kind == "StatefulSet").then(|| name.clone());
                let pods = scale
                    .status
                    .as_ref()
                    .and_then(|s| s.selector.as_deref())
                    .and_then(super::pods::selector_from_string)
                    .map(|selector| PodSelector {
                        selector,
                        statefulset,
                    });
                Ok(TargetRead {
                    state: scale_state(&scale),
                    pods,
                })
            }
        }
    }

    /// PATCHes `/scale` to `replicas`; returns the fingerprint of the version the write
    /// produced (see [`TargetState::version`]).
    pub async fn scale(
        &self,
        namespace: &str,
        target: &TargetRef,
        replicas: i32,
    ) -> Result<Option<ResourceVersion>, TargetError> {
        let patch = Patch::Merge(json!({ "spec": { "replicas": replicas } }));
        let params = PatchParams::default();
        let api_error = |source: kube::Error| map_api_error(target, source);
        let scale = match target {
            TargetRef::Deployment(name) => {
                Api::<Deployment>::namespaced(self.client.clone(), namespace)
                    .patch_scale(name, &params, &patch)
                    .await
                    .map_err(api_error)?
            }
            TargetRef::ReplicaSet(name) => {
                Api::<ReplicaSet>::namespaced(self.client.clone(), namespace)
                    .patch_scale(name, &params, &patch)
                    .await
                    .map_err(api_error)?
            }
            TargetRef::Generic { .. } => self
                .generic_api(namespace, target)
                .await?
                .patch_scale(target_name(target), &params, &patch)
                .await
                .map_err(api_error)?,
        };
        Ok(version_of(&scale.metadata))
    }

    async fn generic_api(
        &self,
        namespace: &str,
        target: &TargetRef,
    ) -> Result<Api<DynamicObject>, TargetError> {
        let TargetRef::Generic {
            api_version, kind, ..
        } = target
        else {
            return Err(TargetError::UnknownKind {
                api_version: String::new(),
                kind: target.describe(),
                detail: "not a generic target".to_string(),
            });
        };
        let key = (api_version.clone(), kind.clone());
        let known = self
            .resources
            .lock()
            .ok()
            .and_then(|cache| cache.get(&key).cloned());
        let resource = match known {
            Some(r) => r,
            None => {
                let resolved = self.resolve(api_version, kind).await?;
                if let Ok(mut cache) = self.resources.lock() {
                    cache.insert(key, resolved.clone());
                }
                resolved
            }
        };
        Ok(Api::namespaced_with(
            self.client.clone(),
            namespace,
            &resource,
        ))
    }

    async fn resolve(&self, api_version: &str, kind: &str) -> Result<ApiResource, TargetError> {
        // The common built-in kinds need no discovery round trip.
        if api_version == "apps/v1" && kind == "StatefulSet" {
            return Ok(ApiResource::erase::<StatefulSet>(&()));
        }
        let (group, version) = match api_version.split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", api_version),
        };
        let gvk = GroupVersionKind::gvk(group, version, kind);
        kube::discovery::pinned_kind(&self.client, &gvk)
            .await
            .map(|(resource, _capabilities)| resource)
            .map_err(|e| TargetError::UnknownKind {
                api_version: api_version.to_string(),
                kind: kind.to_string(),
                detail: e.to_string(),
            })
    }
}

fn target_name(target: &TargetRef) -> &str {
    match target {
        TargetRef::Deployment(name) | TargetRef::ReplicaSet(name) => name,
        TargetRef::Generic { name, .. } => name,
    }
}

fn scale_state(scale: &Scale) -> TargetState {
    TargetState {
        replicas: scale.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0),
        available: scale.status.as_ref().map_or(0, |s| s.replicas),
        version: version_of(&scale.metadata),
    }
}

fn map_api_error(target: &TargetRef, source: kube::Error) -> TargetError {
    match &source {
        kube::Error::Api(status) if status.code == 404 => TargetError::NotFound(target.describe()),
        _ => TargetError::Api {
            target: target.describe(),
            source,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::ScaleTargetRef;

    fn spec() -> WorkerPodAutoScalerSpec {
        serde_json::from_value(json!({
            "minReplicas": 0, "maxReplicas": 3, "targetMessagesPerWorker": 10,
            "queueURI": "redis://r/0/q"
        }))
        .expect("spec")
    }

    #[test]
    fn exactly_one_target_is_resolved() {
        let mut s = spec();
        assert!(TargetRef::from_spec(&s).is_err());
        s.deployment_name = Some("workers".into());
        assert_eq!(
            TargetRef::from_spec(&s),
            Ok(TargetRef::Deployment("workers".into()))
        );
        s.replica_set_name = Some(String::new());
        assert_eq!(
            TargetRef::from_spec(&s),
            Ok(TargetRef::Deployment("workers".into())),
            "empty name is unset"
        );
        s.replica_set_name = Some("rs".into());
        assert!(
            TargetRef::from_spec(&s)
                .unwrap_err()
                .contains("more than one")
        );
        s.deployment_name = None;
        assert_eq!(
            TargetRef::from_spec(&s),
            Ok(TargetRef::ReplicaSet("rs".into()))
        );
        s.replica_set_name = None;
        s.scale_target_ref = Some(ScaleTargetRef {
            api_version: "apps/v1".into(),
            kind: "StatefulSet".into(),
            name: "sts".into(),
        });
        assert_eq!(
            TargetRef::from_spec(&s),
            Ok(TargetRef::Generic {
                api_version: "apps/v1".into(),
                kind: "StatefulSet".into(),
                name: "sts".into()
            })
        );
        s.scale_target_ref = Some(ScaleTargetRef {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            name: "d".into(),
        });
        assert_eq!(
            TargetRef::from_spec(&s),
            Ok(TargetRef::Deployment("d".into()))
        );
    }
}
