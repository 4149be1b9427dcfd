//! `workerpodautoscaler run`: the Kubernetes controller.
//!
//! A kube-runtime `Controller` over WorkerPodAutoScalers with `--wpa-threads` concurrent
//! reconciles. Besides the WPA watch, two things wake a WPA: a change of the Deployment it
//! scales, and the queue registry reporting a meaningful change of its queue (so backlog on a
//! queue at zero replicas is acted on within about one poll interval, not at the resync).

pub mod config;
pub mod metrics;
mod ratelimit;
mod reconcile;
mod status;
mod target;
mod wpa_gauges;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::Api;
use kube::client::ClientBuilder;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use tracing::{error, info, warn};

use crate::admin::{self, Readiness};
use crate::crd::WorkerPodAutoScaler;
use crate::queue::ProviderKind;
use crate::queue::registry::Registry;
use crate::scaler::{Decision, History, ScalerSettings};
pub use config::RunArgs;
use metrics::{Metrics, WpaLabels};
use ratelimit::ApiRateLimitLayer;
use target::Targets;

/// Reconcile failures that are retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Target(#[from] target::TargetError),
    #[error("cannot write the WPA status: {0}")]
    Status(#[source] kube::Error),
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

/// What the controller remembers about one WPA between reconciles.
pub(crate) struct WpaMemory {
    history: History,
    /// (generation, when) of the last successful queue subscription.
    subscribed: Option<(i64, Instant)>,
    /// Our last scale PATCH, trusted over a watch cache that has not caught up with it.
    own_write: Option<OwnWrite>,
    /// The queue, redacted, for metric labels.
    queue_label: String,
}

/// Versions of a target remembered per own write; more writes than this while the cache
/// stays behind only shorten the trust (the cache is then believed a little early).
const OWN_WRITE_VERSIONS: usize = 16;

/// A scale PATCH this controller made, with what is needed to tell whether a cached read
/// of the target already includes it.
#[derive(Debug, Clone)]
pub(crate) struct OwnWrite {
    replicas: i32,
    /// The version the write produced (the PATCH response's resourceVersion).
    produced: Option<target::ResourceVersion>,
    /// Versions that are this write's past: the versions our reads were based on and the
    /// versions our earlier writes produced while the cache was behind. A cached read at
    /// one of these has not seen this write yet.
    superseded: Vec<target::ResourceVersion>,
    at: Instant,
}

/// Shared by every reconcile.
pub(crate) struct Context {
    client: Client,
    registry: Registry,
    targets: Targets,
    settings: ScalerSettings,
    enabled: Vec<ProviderKind>,
    dry_run: bool,
    resync: Duration,
    metrics: Metrics,
    recorder: Recorder,
    memory: Mutex<HashMap<String, WpaMemory>>,
}

impl Context {
    fn with_memory<T>(&self, key: &str, f: impl FnOnce(&mut WpaMemory) -> T) -> Option<T> {
        let mut memory = self.memory.lock().ok()?;
        memory.get_mut(key).map(f)
    }

    /// The WPA's decision history, created from its status on first sight (restart).
    fn history(&self, key: &str, wpa: &WorkerPodAutoScaler) -> History {
        match self.memory.lock() {
            Ok(mut memory) => memory
                .entry(key.to_string())
                .or_insert_with(|| WpaMemory::new(wpa))
                .history
                .clone(),
            Err(_) => History::default(),
        }
    }

    fn record_decision(&self, key: &str, decision: &Decision, current: i32, now: jiff::Timestamp) {
        self.with_memory(key, |m| m.history.record(decision, current, now));
    }

    fn remember_own_write(
        &self,
        key: &str,
        replicas: i32,
        read_version: Option<target::ResourceVersion>,
        produced: Option<target::ResourceVersion>,
    ) {
        self.with_memory(key, |m| {
            // A read that was still behind an earlier write of ours: that write's past and
            // the version it produced are this write's past too.
            let mut superseded = match m.own_write.take() {
                Some(previous)
                    if read_version.is_some_and(|v| previous.superseded.contains(&v)) =>
                {
                    let mut past = previous.superseded;
                    past.extend(previous.produced);
                    past
                }
                _ => Vec::new(),
            };
            superseded.extend(read_version);
            let excess = superseded.len().saturating_sub(OWN_WRITE_VERSIONS);
            superseded.drain(..excess);
            m.own_write = Some(OwnWrite {
                replicas,
                produced,
                superseded,
                at: Instant::now(),
            });
        });
    }

    fn with_own_write(&self, key: &str, state: target::TargetState) -> target::TargetState {
        self.with_memory(key, |m| m.trusted_state(state))
            .unwrap_or(state)
    }

    fn subscription_current(&self, key: &str, generation: i64, max_age: Duration) -> bool {
        self.with_memory(key, |m| {
            m.subscribed
                .is_some_and(|(g, at)| g == generation && at.elapsed() < max_age)
        })
        .unwrap_or(false)
    }

    fn mark_subscribed(&self, key: &str, generation: i64, queue: &str) {
        self.with_memory(key, |m| {
            m.subscribed = Some((generation, Instant::now()));
            m.queue_label = queue.to_string();
        });
    }

    fn queue_label(&self, key: &str) -> String {
        self.with_memory(key, |m| m.queue_label.clone())
            .unwrap_or_default()
    }

    fn labels<'a>(&self, key: &'a str) -> OwnedLabels<'a> {
        let (namespace, name) = key.split_once('/').unwrap_or(("", key));
        OwnedLabels {
            name,
            namespace,
            queue: self.queue_label(key),
        }
    }

    /// Stops polling for a WPA that is gone and drops its metrics; its target is left as is.
    fn forget(&self, key: &str) {
        self.registry.unsubscribe(key);
        self.metrics
            .poll_loops
            .set(i64::try_from(self.registry.active_loops()).unwrap_or(i64::MAX));
        let removed = self.memory.lock().ok().and_then(|mut m| m.remove(key));
        if let Some(memory) = removed {
            let (namespace, name) = key.split_once('/').unwrap_or(("", key));
            self.metrics.forget(&WpaLabels {
                name,
                namespace,
                queue_name: &memory.queue_label,
            });
            info!(wpa = key, "WPA removed; stopped watching its queue");
        }
    }

    /// Forgets every WPA that is no longer in the watch cache (deletes missed while the
    /// watch was down leave no Delete event).
    fn sweep(&self, store: &Store<WorkerPodAutoScaler>) {
        let live: HashSet<String> = store
            .state()
            .iter()
            .map(|w| format!("{}/{}", w.namespace().unwrap_or_default(), w.name_any()))
            .collect();
        let known: Vec<String> = self
            .memory
            .lock()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        for key in known.into_iter().filter(|k| !live.contains(k)) {
            self.forget(&key);
        }
    }
}

/// Metric labels with the queue label owned.
pub(crate) struct OwnedLabels<'a> {
    name: &'a str,
    namespace: &'a str,
    queue: String,
}

impl OwnedLabels<'_> {
    fn as_labels(&self) -> WpaLabels<'_> {
        WpaLabels {
            name: self.name,
            namespace: self.namespace,
            queue_name: &self.queue,
        }
    }
}

fn error_policy(wpa: Arc<WorkerPodAutoScaler>, error: &Error, _ctx: Arc<Context>) -> Action {
    warn!(wpa = %wpa.name_any(), namespace = ?wpa.namespace(), %error, "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

async fn client_for(args: &RunArgs) -> Result<Client, RunError> {
    let config = if args.kube_config.is_empty() {
        kube::Config::infer()
            .await
            .map_err(|e| RunError::KubeConfig(e.to_string()))?
    } else {
        let kubeconfig = Kubeconfig::read_from(&args.kube_config)
            .map_err(|e| RunError::KubeConfig(format!("{}: {e}", args.kube_config)))?;
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .map_err(|e| RunError::KubeConfig(format!("{}: {e}", args.kube_config)))?
    };
    let builder = ClientBuilder::try_from(config).map_err(RunError::Client)?;
    Ok(
        match ApiRateLimitLayer::new(args.k8s_api_qps, args.k8s_api_burst) {
            Some(pacing) => builder.with_layer(&pacing).build(),
            None => builder.build(),
        },
    )
}

/// Runs the controller until SIGTERM/SIGINT (or, with leader election, until the lease is
/// lost).
pub async fn run(args: RunArgs) -> Result<(), RunError> {
    let settings = args.scaler_settings()?;
    let enabled = args.enabled_providers()?;
    let metrics_addr = args.metrics_addr()?;
    let client = client_for(&args).await?;
    let metrics = Metrics::new()?;
    let readiness = Readiness::new(args.leader_elect);

    let (admin_addr, router, listener) =
        admin::bind(metrics_addr, metrics.clone(), readiness.clone())
            .await
            .map_err(|source| RunError::Admin {
                addr: metrics_addr.to_string(),
                source,
            })?;
    info!(%admin_addr, "serving /metrics, /healthz and /readyz");
    let admin = tokio::spawn(async move { axum::serve(listener, router).await });

    let result = if args.leader_elect {
        leader::run_as_leader(&args, client.clone(), readiness.clone(), |client| {
            run_controller(
                args.clone(),
                client,
                settings.clone(),
                enabled.clone(),
                metrics.clone(),
                readiness.clone(),
            )
        })
        .await
    } else {
        run_controller(args.clone(), client, settings, enabled, metrics, readiness).await;
        Ok(())
    };
    admin.abort();
    result
}

async fn run_controller(
    args: RunArgs,
    client: Client,
    settings: ScalerSettings,
    enabled: Vec<ProviderKind>,
    metrics: Metrics,
    readiness: Readiness,
) {
    let namespace = (!args.namespace.is_empty()).then(|| args.namespace.clone());
    let wpas: Api<WorkerPodAutoScaler> = match &namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let deployments: Api<Deployment> = match &namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };

    let registry = Registry::new(args.poll_settings(), args.provider_options());
    registry.set_observer(Arc::new(metrics.clone()));

    let cache_sync = Arc::new(CacheSync::new(readiness));
    // Deployments are cached without their pod templates: only replicas matter here.
    let (deployment_store, deployment_writer) = reflector::store();
    let deployment_stream = watcher(deployments, watcher::Config::default())
        .default_backoff()
        .modify(|d: &mut Deployment| {
            d.managed_fields_mut().clear();
            if let Some(spec) = d.spec.as_mut() {
                spec.template = Default::default();
            }
        })
        .reflect(deployment_writer)
        .inspect_ok({
            let sync = cache_sync.clone();
            move |event| sync.observe(Cache::Deployments, event)
        })
        .touched_objects();

    let (wpa_store, wpa_writer) = reflector::store();
    let ctx = Arc::new(Context {
        client: client.clone(),
        registry: registry.clone(),
        targets: Targets::new(client.clone(), deployment_store.clone()),
        settings,
        enabled,
        dry_run: args.dry_run,
        resync: Duration::from_secs(args.resync_period),
        metrics,
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: "workerpodautoscaler".to_string(),
                instance: std::env::var("POD_NAME").ok(),
            },
        ),
        memory: Mutex::new(HashMap::new()),
    });
    let deletes_ctx = ctx.clone();
    let wpa_stream = watcher(wpas, watcher::Config::default())
        .default_backoff()
        // Never read, and in a cluster often larger than the rest of the object: with
        // thousands of WPAs they would dominate the cache.
        .modify(|w: &mut WorkerPodAutoScaler| {
            w.managed_fields_mut().clear();
            w.annotations_mut()
                .remove("kubectl.kubernetes.io/last-applied-configuration");
        })
        .reflect(wpa_writer)
        .inspect_ok({
            let sync = cache_sync.clone();
            move |event| sync.observe(Cache::Wpas, event)
        })
        .inspect_ok(move |event| {
            if let watcher::Event::Delete(wpa) = event {
                deletes_ctx.forget(&format!(
                    "{}/{}",
                    wpa.namespace().unwrap_or_default(),
                    wpa.name_any()
                ));
            }
        })
        .touched_objects();

    // Sweep for WPAs deleted while no watch was open (once the WPA cache is complete).
    let sweep_ctx = ctx.clone();
    let sweep_store = wpa_store.clone();
    let resync = ctx.resync;
    let sweep_sync = cache_sync.clone();
    let sweeper = tokio::spawn(async move {
        let mut tick = tokio::time::interval(resync);
        loop {
            tick.tick().await;
            if sweep_sync.all_synced() {
                sweep_ctx.sweep(&sweep_store);
            }
        }
    });

    let mapper_store = wpa_store.clone();
    let controller = Controller::for_stream(wpa_stream, wpa_store)
        .with_config(kube::runtime::controller::Config::default().concurrency(args.wpa_threads))
        .watches_stream(deployment_stream, move |deployment: Deployment| {
            wpas_scaling(&mapper_store, &deployment)
        })
        .reconcile_on(queue_wakeups(registry.clone()))
        .shutdown_on_signal();
    info!(
        threads = args.wpa_threads,
        namespace = namespace.as_deref().unwrap_or("<all>"),
        "controller started"
    );
    controller
        .run(reconcile::reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "reconcile outcome");
            }
        })
        .await;
    sweeper.abort();
    registry.shutdown().await;
    info!("controller stopped");
}

/// The watch caches whose first complete listing readiness waits for.
#[derive(Debug, Clone, Copy)]
enum Cache {
    Wpas,
    Deployments,
}

/// Marks the controller ready once every cache has seen its first complete listing.
///
/// Watched on the streams rather than with `Store::wait_until_ready`: the controller already
/// waits on the WPA store that way, and a second waiter on the same store is never woken
/// (its readiness signal keeps a single waker), which left `/readyz` at 503 for good.
struct CacheSync {
    wpas: AtomicBool,
    deployments: AtomicBool,
    readiness: Readiness,
}

impl CacheSync {
    fn new(readiness: Readiness) -> Self {
        Self {
            wpas: AtomicBool::new(false),
            deployments: AtomicBool::new(false),
            readiness,
        }
    }

    fn observe<K>(&self, cache: Cache, event: &watcher::Event<K>) {
        if !matches!(event, watcher::Event::InitDone) {
            return;
        }
        let flag = match cache {
            Cache::Wpas => &self.wpas,
            Cache::Deployments => &self.deployments,
        };
        let first = !flag.swap(true, Ordering::SeqCst);
        if first && self.all_synced() {
            self.readiness.set_caches_synced();
            info!("caches synced");
        }
    }

    fn all_synced(&self) -> bool {
        self.wpas.load(Ordering::SeqCst) && self.deployments.load(Ordering::SeqCst)
    }
}

/// The WPAs whose target is this Deployment.
fn wpas_scaling(
    store: &Store<WorkerPodAutoScaler>,
    deployment: &Deployment,
) -> Vec<ObjectRef<WorkerPodAutoScaler>> {
    let Some(namespace) = deployment.meta().namespace.as_deref() else {
        return Vec::new();
    };
    let name = deployment.name_any();
    store
        .state()
        .iter()
        .filter(|w| w.namespace().as_deref() == Some(namespace))
        .filter(|w| matches!(target::TargetRef::from_spec(&w.spec), Ok(target::TargetRef::Deployment(ref d)) if *d == name))
        .map(|w| ObjectRef::from_obj(w.as_ref()))
        .collect()
}

/// The registry's "this queue changed" notices, as WPA references.
fn queue_wakeups(
    registry: Registry,
) -> impl Stream<Item = ObjectRef<WorkerPodAutoScaler>> + Send + 'static {
    let receiver = registry.wakeups();
    futures::stream::unfold(receiver, |mut receiver| async move {
        loop {
            match receiver.recv().await {
                Ok(key) => {
                    if let Some((namespace, name)) = key.split_once('/') {
                        return Some((ObjectRef::new(name).within(namespace), receiver));
                    }
                }
                // Missed notices only delay a reconcile until the resync.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                    warn!(missed, "queue change notices dropped");
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}

mod leader {
    //! Leader election over a coordination.k8s.io Lease (kube-lease-manager).

    use std::future::Future;

    use kube::Client;
    use kube_lease_manager::LeaseManagerBuilder;
    use tracing::info;

    use super::{RunArgs, RunError, error};
    use crate::admin::Readiness;

    /// Waits for the lease, then runs `work` while holding it. Losing the lease ends the
    /// process's leadership for good (the caller exits, the standby takes over).
    pub async fn run_as_leader<F, Fut>(
        args: &RunArgs,
        client: Client,
        readiness: Readiness,
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
        while !*leader.borrow_and_update() {
            if leader.changed().await.is_err() {
                return Err(RunError::Lease("the lease task ended".to_string()));
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
                error!("lost the leader lease");
                Err(RunError::LeadershipLost)
            }
        };
        drop(leader);
        let _ = lease_task.await;
        outcome
    }
}
