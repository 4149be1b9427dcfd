//! An in-memory Kubernetes API server double for integration tests and benchmarks.
//!
//! The real kube client (Api, watcher, reflector, Controller, Recorder, kube-lease-manager)
//! talks to it over real HTTP on 127.0.0.1, so tests exercise the same requests a cluster
//! would see, without a cluster.
//!
//! # Design
//!
//! - `routes.rs`: one axum fallback handler parses Kubernetes paths itself
//!   (`/api/v1/...`, `/apis/{group}/{version}/...`, namespaced or cluster-scoped,
//!   subresources), applies injected faults, dispatches, and records every request.
//! - `ops.rs`: the API semantics (create/get/list/update/patch/delete, `/status`, `/scale`,
//!   optimistic concurrency, finalizers). The test-facing methods below use it too, so
//!   direct writes produce watch events exactly like HTTP writes.
//! - `store.rs`: objects as `serde_json::Value`, one global resourceVersion counter, and a
//!   bounded event history that watches replay from; older versions get 410 Gone.
//! - `watch.rs`: newline-delimited JSON watch streams with bookmarks and timeouts.
//! - `patch.rs` / `managed.rs`: JSON, merge, strategic (as merge) patches and server-side
//!   apply with a loose field-ownership model (enough for apply conflicts).
//! - `faults.rs`, `recording.rs`, `workload.rs`: fault injection, request recording and
//!   optional simulated workload status.
//! - `pods/`: optional simulated Pods that follow workload replicas, removed in the real
//!   ReplicaSet controller's order (pod-deletion-cost), with events for pod runners.
//! - `resources.rs`: which resources exist; `discovery.rs`: discovery documents.
//!
//! Objects are untyped JSON on purpose: the double serves any resource a test registers, and
//! it does not depend on the `wpa` crate so a benchmark binary can include it with
//! `#[path = "../tests/it/support/apiserver/mod.rs"] mod apiserver;`.
//!
//! # Known simplifications
//!
//! No authentication, admission, validation against schemas or defaulting; one version per
//! resource; strategic merge patch merges like a JSON merge patch (lists are replaced);
//! continued lists are not snapshots (see `ops::Shared::list_objects`); `managedFields` are
//! tracked internally but not written into objects; no `dryRun` (rejected with 400), no
//! protobuf/CBOR bodies (415; kubectl's typed `create` needs `create -f`), no garbage
//! collection of owned objects, no namespace lifecycle. A watch that falls more than 4096
//! events behind is ended with a 410 ERROR event.
//!
//! # Usage
//!
//! ```ignore
//! let server = ApiServerDouble::start().await?;
//! server.insert(objects::deployment("ns", "worker", 1))?;
//! let client = server.client()?;
//! let deployments: kube::Api<Deployment> = kube::Api::namespaced(client, "ns");
//! deployments.patch_scale("worker", &PatchParams::default(),
//!     &Patch::Merge(json!({"spec": {"replicas": 3}}))).await?;
//! assert_eq!(server.scale_patches("ns", "worker"), vec![3]);
//!
//! // Faults: the next two scale patches fail with 500; all lease calls are slow.
//! server.inject(Fault::status(500).method("PATCH").path_contains("/scale").times(2));
//! server.inject(Fault::latency(Duration::from_millis(300)).path_contains("/leases/"));
//! // Watches: end them all now; the next resume gets 410 so watchers relist.
//! server.fail_next_watch_resumes(1);
//! server.drop_watches();
//! // Workloads report their desired replicas as available after 500 ms.
//! server.simulate_workloads(Some(Duration::from_millis(500)));
//! // Workloads get Pods that follow their replicas; removed Pods terminate for 2 s.
//! server.simulate_pods(true);
//! server.set_pod_termination_grace(Duration::from_secs(2));
//! let mut events = server.pod_events(); // PodEvent::{Created, Terminating, Deleted}
//! server.set_pod_deletion_cost("ns", &server.live_pod_names(&Gvr::DEPLOYMENTS, "ns", "worker")[0], 100)?;
//! // Wait for what a controller eventually writes.
//! server.wait_for(Duration::from_secs(30), |s| {
//!     s.get(&Gvr::DEPLOYMENTS, Some("ns"), "worker").filter(|d| d["spec"]["replicas"] == 5)
//! }).await;
//! ```
#![allow(dead_code)]

mod discovery;
pub mod faults;
mod managed;
pub mod objects;
mod ops;
mod patch;
pub mod pods;
pub mod recording;
pub mod resources;
mod routes;
mod selectors;
mod shared;
pub mod status;
mod store;
mod watch;
mod workload;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::Value;

#[allow(unused_imports)]
pub use faults::{Fault, FaultId};
#[allow(unused_imports)]
pub use pods::{DELETION_COST, PodEvent, PodRef, PodSummary, WorkloadKind};
#[allow(unused_imports)]
pub use recording::RecordedRequest;
#[allow(unused_imports)]
pub use resources::{Gvr, ResourceDef, ScalePaths};
#[allow(unused_imports)]
pub use shared::PodIps;
#[allow(unused_imports)]
pub use status::ApiError;

use ops::{ObjectRef, Target};
use shared::Shared;

/// The field manager recorded for writes made through the handle's direct store access.
const TEST_MANAGER: &str = "apiserver-double-test";

/// A running API server double. Dropping it stops the server and ends open watches.
pub struct ApiServerDouble {
    shared: Arc<Shared>,
    addr: SocketAddr,
    /// Dropping (or sending on) this stops the server: it accepts no new connections and
    /// closes idle keep-alive ones, so clients see a server that is gone.
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl ApiServerDouble {
    /// Starts a server on 127.0.0.1 with a free port.
    pub async fn start() -> std::io::Result<Self> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Starts a server on a given address (for the standalone example).
    pub async fn start_on(addr: SocketAddr) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new());
        let app = routes::router(Arc::clone(&shared));
        let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
                // Either a send or the sender being dropped means stop.
                let _ = stopped.await;
            });
            if let Err(error) = serve.await {
                tracing::error!(%error, "API server double stopped");
            }
        });
        Ok(ApiServerDouble {
            shared,
            addr,
            shutdown: Some(shutdown),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kube client configuration pointing at this server (default namespace "default").
    pub fn kube_config(&self) -> Result<kube::Config, ApiError> {
        let uri = self
            .url()
            .parse::<axum::http::Uri>()
            .map_err(|e| ApiError::from_code(500, format!("bad server URL: {e}")))?;
        Ok(kube::Config::new(uri))
    }

    /// A real kube client for this server.
    pub fn client(&self) -> Result<kube::Client, kube::Error> {
        // kube builds a TLS connector even for http URLs; make sure rustls has a provider.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let config = self.kube_config().map_err(|e| {
            kube::Error::Service(Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
        })?;
        kube::Client::try_from(config)
    }

    /// A kubeconfig document for this server, with `namespace` as the context's default.
    pub fn kubeconfig_yaml(&self, namespace: &str) -> String {
        format!(
            "apiVersion: v1\n\
             kind: Config\n\
             clusters:\n\
             - name: apiserver-double\n  cluster:\n    server: {url}\n\
             users:\n\
             - name: apiserver-double\n  user: {{}}\n\
             contexts:\n\
             - name: apiserver-double\n  context:\n    cluster: apiserver-double\n    user: apiserver-double\n    namespace: {namespace}\n\
             current-context: apiserver-double\n",
            url = self.url()
        )
    }

    /// Writes [`Self::kubeconfig_yaml`] (namespace "default") to `path`, for running a binary
    /// as a subprocess with `--kube-config path` or `KUBECONFIG=path`.
    pub fn write_kubeconfig(&self, path: &Path) -> std::io::Result<()> {
        std::fs::write(path, self.kubeconfig_yaml("default"))
    }

    // ----- resources -------------------------------------------------------------------

    /// Serves another resource (or replaces a definition), e.g. a CRD with a scale
    /// subresource: `ResourceDef::namespaced(Gvr::new("example.com", "v1", "widgets"),
    /// "Widget").with_status().with_scale(ScalePaths::workload())`.
    pub fn register(&self, def: ResourceDef) {
        self.shared.register(def);
    }

    fn def(&self, gvr: &Gvr) -> Result<ResourceDef, ApiError> {
        self.shared
            .resolve(gvr)
            .ok_or_else(|| ApiError::not_found(gvr, "(resource not registered)"))
    }

    fn def_of(&self, object: &Value) -> Result<ResourceDef, ApiError> {
        let api_version = object
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let kind = object
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default();
        self.shared.resolve_kind(api_version, kind).ok_or_else(|| {
            ApiError::bad_request(format!("no resource registered for {api_version} {kind}"))
        })
    }

    // ----- direct store access (no HTTP; still emits watch events) ------------------------

    /// Creates an object as given, status included (unlike an HTTP create, which drops
    /// `.status` for resources with a status subresource). The resource is found from
    /// `apiVersion` and `kind`; namespaced objects need `metadata.namespace`.
    pub fn insert(&self, object: Value) -> Result<Value, ApiError> {
        let def = self.def_of(&object)?;
        self.shared.insert_object(&def, object, TEST_MANAGER, None)
    }

    pub fn get(&self, gvr: &Gvr, namespace: Option<&str>, name: &str) -> Option<Value> {
        let def = self.def(gvr).ok()?;
        self.shared
            .get_object(ObjectRef::new(&def, namespace, name))
            .ok()
    }

    /// All objects of a resource, in one namespace or (with `None`) all.
    pub fn list(&self, gvr: &Gvr, namespace: Option<&str>) -> Vec<Value> {
        let Ok(def) = self.def(gvr) else {
            return Vec::new();
        };
        let store = self.shared.store();
        store
            .list(&def.store_id(), namespace)
            .map(|(_, object)| object.clone())
            .collect()
    }

    /// Replaces an existing object wholesale (status included), ignoring its
    /// resourceVersion. Returns the stored object.
    pub fn replace(&self, mut object: Value) -> Result<Value, ApiError> {
        let def = self.def_of(&object)?;
        objects::remove_pointer(&mut object, "/metadata/resourceVersion");
        let name = objects::name_of(&object).to_string();
        let namespace = objects::namespace_of(&object).map(str::to_string);
        self.shared.modify_object(
            ObjectRef::new(&def, namespace.as_deref(), &name),
            Target::Whole,
            TEST_MANAGER,
            None,
            |_, _| Ok(object),
        )
    }

    /// Changes an object in place: `server.modify(&Gvr::DEPLOYMENTS, Some("ns"), "d", |d| {
    /// d["status"]["availableReplicas"] = 2.into(); })`.
    pub fn modify(
        &self,
        gvr: &Gvr,
        namespace: Option<&str>,
        name: &str,
        change: impl FnOnce(&mut Value),
    ) -> Result<Value, ApiError> {
        let def = self.def(gvr)?;
        self.shared.modify_object(
            ObjectRef::new(&def, namespace, name),
            Target::Whole,
            TEST_MANAGER,
            None,
            |old, _| {
                let mut next = old.clone();
                change(&mut next);
                objects::remove_pointer(&mut next, "/metadata/resourceVersion");
                Ok(next)
            },
        )
    }

    /// Deletes an object (or marks it deleted while it has finalizers).
    pub fn delete(
        &self,
        gvr: &Gvr,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Value, ApiError> {
        let def = self.def(gvr)?;
        self.shared
            .delete_object(ObjectRef::new(&def, namespace, name), &Value::Null)
    }

    /// The current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.store().resource_version()
    }

    /// The `spec.replicas` values an object went through, from the retained event history
    /// (consecutive duplicates removed), oldest first.
    pub fn replica_history(&self, gvr: &Gvr, namespace: Option<&str>, name: &str) -> Vec<i64> {
        let Ok(def) = self.def(gvr) else {
            return Vec::new();
        };
        let key = store::ObjectKey::new(&def, namespace, name);
        let pointer = def
            .scale
            .as_ref()
            .map_or("/spec/replicas".to_string(), |s| s.spec_replicas.clone());
        let store = self.shared.store();
        let mut history: Vec<i64> = Vec::new();
        for event in store.retained_events() {
            if event.key != key {
                continue;
            }
            if let Some(replicas) = event.object.pointer(&pointer).and_then(Value::as_i64)
                && history.last() != Some(&replicas)
            {
                history.push(replicas);
            }
        }
        history
    }

    /// Polls `check` against the server state every 20 ms until it returns `Some`, or gives
    /// `None` after `timeout`. For asserting on what a controller eventually writes:
    /// `server.wait_for(secs(30), |s| s.get(&Gvr::DEPLOYMENTS, Some("ns"), "w")
    ///     .filter(|d| d["spec"]["replicas"] == 5)).await`.
    pub async fn wait_for<T>(
        &self,
        timeout: Duration,
        mut check: impl FnMut(&Self) -> Option<T>,
    ) -> Option<T> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(value) = check(self) {
                return Some(value);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    // ----- watch behaviour -------------------------------------------------------------

    /// How many events are kept for watch resumes (default 10 000). Older resumes get 410.
    pub fn set_history_limit(&self, limit: usize) {
        self.shared.store().set_history_limit(limit);
    }

    /// Forgets all history: every watch resuming from an earlier version gets 410 Gone.
    pub fn compact_history(&self) {
        self.shared.store().compact();
    }

    /// Interval of BOOKMARK events for watches with `allowWatchBookmarks=true` (default 2 s;
    /// applies to watches started afterwards).
    pub fn set_bookmark_interval(&self, interval: Duration) {
        self.shared
            .update_settings(|s| s.bookmark_interval = interval);
    }

    /// Number of watch streams currently open.
    pub fn open_watches(&self) -> usize {
        self.shared.open_watches.load(Ordering::SeqCst)
    }

    // ----- workload simulation -----------------------------------------------------------

    /// `Some(delay)`: when a Deployment/ReplicaSet/StatefulSet's spec.replicas changes (or
    /// one is created), set status replicas/ready/available/updated to it after `delay`
    /// (zero: in the same call). `None` (the default): status only changes when written.
    pub fn simulate_workloads(&self, delay: Option<Duration>) {
        self.shared.update_settings(|s| s.workload_delay = delay);
    }

    // ----- recording ---------------------------------------------------------------------

    /// Every request answered so far, oldest first.
    pub fn recorded(&self) -> Vec<RecordedRequest> {
        self.shared.recorder.all()
    }

    /// Recorded requests other than GET (creates, updates, patches, deletes).
    pub fn writes(&self) -> Vec<RecordedRequest> {
        self.recorded()
            .into_iter()
            .filter(|r| r.is_write())
            .collect()
    }

    /// Recorded requests with this method whose path contains `path_fragment`.
    pub fn requests(&self, method: &str, path_fragment: &str) -> Vec<RecordedRequest> {
        self.recorded()
            .into_iter()
            .filter(|r| r.method.eq_ignore_ascii_case(method) && r.path.contains(path_fragment))
            .collect()
    }

    /// Replica counts of successful PATCH/PUT requests to the `/scale` subresource of
    /// `namespace/name` (any resource), oldest first.
    pub fn scale_patches(&self, namespace: &str, name: &str) -> Vec<i32> {
        recording::scale_writes(&self.recorded(), namespace, name)
    }

    pub fn clear_recorded(&self) {
        self.shared.recorder.clear();
    }

    /// Turns request recording on (the default) or off, e.g. for long benchmark runs.
    pub fn set_recording(&self, enabled: bool) {
        self.shared.recorder.set_enabled(enabled);
    }

    // ----- faults ------------------------------------------------------------------------

    /// Adds a fault rule; see [`Fault`].
    pub fn inject(&self, fault: Fault) -> FaultId {
        self.shared.faults.add(fault)
    }

    pub fn remove_fault(&self, id: FaultId) {
        self.shared.faults.remove(id);
    }

    pub fn clear_faults(&self) {
        self.shared.faults.clear();
    }

    /// Ends every open watch stream now (clients see the stream end, as on a connection
    /// reset by a load balancer, and resume from their last resourceVersion).
    pub fn drop_watches(&self) {
        self.shared.watch_epoch.send_modify(|epoch| *epoch += 1);
    }

    /// The next `n` watch requests that resume from a resourceVersion get an ERROR event with
    /// 410 Gone instead of events (kube's watcher then relists).
    pub fn fail_next_watch_resumes(&self, n: usize) {
        self.shared.gone_on_resume.fetch_add(n, Ordering::SeqCst);
    }
}

impl Drop for ApiServerDouble {
    fn drop(&mut self) {
        // Watch streams would keep their connections open through a graceful shutdown.
        self.drop_watches();
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}
