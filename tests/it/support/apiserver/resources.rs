//! Which resources the double serves: group/version/resource names, kinds, scope and the
//! subresources (`/status`, `/scale`) each one supports.

use std::borrow::Cow;
use std::collections::BTreeMap;

/// Group, version and plural resource name, e.g. `apps`, `v1`, `deployments`.
/// The core group is the empty string.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Gvr {
    pub group: Cow<'static, str>,
    pub version: Cow<'static, str>,
    pub resource: Cow<'static, str>,
}

impl Gvr {
    pub const DEPLOYMENTS: Gvr = Gvr::fixed("apps", "v1", "deployments");
    pub const REPLICASETS: Gvr = Gvr::fixed("apps", "v1", "replicasets");
    pub const STATEFULSETS: Gvr = Gvr::fixed("apps", "v1", "statefulsets");
    pub const PODS: Gvr = Gvr::fixed("", "v1", "pods");
    pub const NAMESPACES: Gvr = Gvr::fixed("", "v1", "namespaces");
    pub const SECRETS: Gvr = Gvr::fixed("", "v1", "secrets");
    pub const CONFIGMAPS: Gvr = Gvr::fixed("", "v1", "configmaps");
    pub const CORE_EVENTS: Gvr = Gvr::fixed("", "v1", "events");
    pub const EVENTS: Gvr = Gvr::fixed("events.k8s.io", "v1", "events");
    pub const LEASES: Gvr = Gvr::fixed("coordination.k8s.io", "v1", "leases");
    pub const WORKER_POD_AUTOSCALERS: Gvr =
        Gvr::fixed("k8s.practo.dev", "v1", "workerpodautoscalers");

    /// A `Gvr` from static names, usable in constants.
    pub const fn fixed(group: &'static str, version: &'static str, resource: &'static str) -> Self {
        Gvr {
            group: Cow::Borrowed(group),
            version: Cow::Borrowed(version),
            resource: Cow::Borrowed(resource),
        }
    }

    pub fn new(group: &str, version: &str, resource: &str) -> Self {
        Gvr {
            group: Cow::Owned(group.to_string()),
            version: Cow::Owned(version.to_string()),
            resource: Cow::Owned(resource.to_string()),
        }
    }

    /// `apps/v1`, or `v1` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `deployments.apps`, or `pods` for the core group: the name used in Status messages.
    pub fn qualified_resource(&self) -> String {
        if self.group.is_empty() {
            self.resource.to_string()
        } else {
            format!("{}.{}", self.resource, self.group)
        }
    }
}

/// Where the `/scale` subresource reads and writes the replica counts, as JSON pointers
/// (`/spec/replicas`). `selector` points either at a `LabelSelector` object (rendered to a
/// selector string, as for Deployments) or at a string (as CRDs usually do).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScalePaths {
    pub spec_replicas: String,
    pub status_replicas: String,
    pub selector: Option<String>,
}

impl ScalePaths {
    /// The paths used by Deployments, ReplicaSets and StatefulSets.
    pub fn workload() -> Self {
        ScalePaths {
            spec_replicas: "/spec/replicas".to_string(),
            status_replicas: "/status/replicas".to_string(),
            selector: Some("/spec/selector".to_string()),
        }
    }
}

/// Everything the double needs to serve one resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceDef {
    pub gvr: Gvr,
    pub kind: String,
    pub namespaced: bool,
    /// With a status subresource, writes to the main resource keep `.status` unchanged and
    /// writes to `/status` change only `.status` (as the real API server does).
    pub status_subresource: bool,
    pub scale: Option<ScalePaths>,
    /// Short names advertised in discovery (`deploy`), for kubectl.
    pub short_names: Vec<String>,
}

impl ResourceDef {
    /// A namespaced resource without subresources.
    pub fn namespaced(gvr: Gvr, kind: &str) -> Self {
        ResourceDef {
            gvr,
            kind: kind.to_string(),
            namespaced: true,
            status_subresource: false,
            scale: None,
            short_names: Vec::new(),
        }
    }

    /// A cluster-scoped resource without subresources.
    pub fn cluster(gvr: Gvr, kind: &str) -> Self {
        ResourceDef {
            namespaced: false,
            ..ResourceDef::namespaced(gvr, kind)
        }
    }

    pub fn with_status(mut self) -> Self {
        self.status_subresource = true;
        self
    }

    pub fn with_scale(mut self, paths: ScalePaths) -> Self {
        self.scale = Some(paths);
        self
    }

    pub fn with_short_names(mut self, names: &[&str]) -> Self {
        self.short_names = names.iter().map(|n| n.to_string()).collect();
        self
    }

    /// The key objects of this resource are stored under; the version is not part of it
    /// because the double serves one version per resource.
    pub(crate) fn store_id(&self) -> String {
        format!("{}/{}", self.gvr.group, self.gvr.resource)
    }
}

/// The resources known to a running double.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    by_gvr: BTreeMap<Gvr, ResourceDef>,
}

impl Registry {
    /// The resources every double serves from the start.
    pub fn preregistered() -> Self {
        let mut registry = Registry::default();
        let workload = |gvr: Gvr, kind: &str, short: &str| {
            ResourceDef::namespaced(gvr, kind)
                .with_status()
                .with_scale(ScalePaths::workload())
                .with_short_names(&[short])
        };
        registry.register(workload(Gvr::DEPLOYMENTS, "Deployment", "deploy"));
        registry.register(workload(Gvr::REPLICASETS, "ReplicaSet", "rs"));
        registry.register(workload(Gvr::STATEFULSETS, "StatefulSet", "sts"));
        registry.register(
            ResourceDef::namespaced(Gvr::PODS, "Pod")
                .with_status()
                .with_short_names(&["po"]),
        );
        registry.register(
            ResourceDef::cluster(Gvr::NAMESPACES, "Namespace")
                .with_status()
                .with_short_names(&["ns"]),
        );
        registry.register(ResourceDef::namespaced(Gvr::SECRETS, "Secret"));
        registry.register(
            ResourceDef::namespaced(Gvr::CONFIGMAPS, "ConfigMap").with_short_names(&["cm"]),
        );
        registry
            .register(ResourceDef::namespaced(Gvr::CORE_EVENTS, "Event").with_short_names(&["ev"]));
        registry.register(ResourceDef::namespaced(Gvr::EVENTS, "Event").with_short_names(&["ev"]));
        registry.register(ResourceDef::namespaced(Gvr::LEASES, "Lease"));
        registry.register(
            ResourceDef::namespaced(Gvr::WORKER_POD_AUTOSCALERS, "WorkerPodAutoScaler")
                .with_status()
                .with_short_names(&["wpa", "wpas"]),
        );
        registry
    }

    /// Adds or replaces a resource definition.
    pub fn register(&mut self, def: ResourceDef) {
        self.by_gvr.insert(def.gvr.clone(), def);
    }

    pub fn get(&self, gvr: &Gvr) -> Option<&ResourceDef> {
        self.by_gvr.get(gvr)
    }

    /// Finds the resource of an object from its `apiVersion` and `kind`.
    pub fn by_kind(&self, api_version: &str, kind: &str) -> Option<&ResourceDef> {
        self.by_gvr
            .values()
            .find(|def| def.gvr.api_version() == api_version && def.kind == kind)
    }

    pub fn all(&self) -> impl Iterator<Item = &ResourceDef> {
        self.by_gvr.values()
    }
}
