//! `workerpodautoscaler run`: the Kubernetes controller.
//!
//! A kube-runtime `Controller` over WorkerPodAutoScalers with `--wpa-threads` concurrent
//! reconciles. Besides the WPA watch, two things wake a WPA: a change of the Deployment it
//! scales, and the queue registry reporting a meaningful change of its queue (so backlog on a
//! queue at zero replicas is acted on within about one poll interval, not at the resync).
//!
//! A reconcile is observe (`observe.rs`) -> plan (`plan.rs`, pure) -> apply (`apply.rs`);
//! what it remembers between runs is in `memory.rs`, what all share in `context.rs`.

mod api_errors;
mod apply;
mod client;
pub mod config;
mod context;
mod credentials;
mod drain;
mod drain_apply;
mod drain_observe;
mod error;
mod key;
mod leader;
mod memory;
pub mod metrics;
mod observe;
mod observed;
mod plan;
mod plan_drain;
mod plan_figures;
#[cfg(test)]
mod plan_tests;
mod plan_wait;
mod planned_event;
mod pods;
mod poll_flags;
mod problem;
mod ratelimit;
mod reconcile;
mod shutdown;
mod status;
mod status_writer;
mod target;
mod wait_observe;
mod watch_log;
mod watches;
mod wpa_gauges;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector;
use tracing::{info, warn};

use crate::admin::{self, Readiness};
use crate::crd::WorkerPodAutoScaler;
use crate::queue::ProviderKind;
use crate::queue::registry::Registry;
use crate::scaler::ScalerSettings;
use crate::workers::WorkerSignals;
pub use config::RunArgs;
use context::Context;
pub use error::{Error, RunError};
use memory::Memories;
use metrics::Metrics;
use plan::PlanSettings;
use shutdown::Shutdown;
use status_writer::StatusWriter;
use target::Targets;
use watches::CacheSync;

/// The step of [`context::Context::failures`] a reconcile's own failure is kept under.
const RECONCILE: &str = "reconcile";

fn error_policy(wpa: Arc<WorkerPodAutoScaler>, error: &Error, ctx: Arc<Context>) -> Action {
    // Retried every few seconds: a failure that repeats the same way is logged once.
    let key = key::WpaKey::of(&wpa);
    match ctx
        .failures
        .failed(&key.to_string(), RECONCILE, &error.to_string())
    {
        api_errors::Seen::New => warn!(wpa = %key, %error, "reconcile failed; retrying"),
        api_errors::Seen::Again => tracing::debug!(wpa = %key, %error, "reconcile failed again"),
    }
    Action::requeue(reconcile::aligned(
        Duration::from_secs(5),
        ctx.registry.epoch(),
        tokio::time::Instant::now(),
    ))
}

/// Runs the controller until SIGTERM/SIGINT (or, with leader election, until the lease is
/// lost).
pub async fn run(args: RunArgs) -> Result<(), RunError> {
    let settings = args.scaler_settings()?;
    let enabled = args.enabled_providers()?;
    let metrics_addr = args.metrics_addr()?;
    let metrics = Metrics::new()?;
    let shutdown = Shutdown::on_signals();
    let client = client::client_for(&args, &metrics, &shutdown).await?;
    let readiness = Readiness::new(args.leader_elect);

    let (admin_addr, router, listener) =
        admin::bind(metrics_addr, metrics.render_fn(), readiness.clone())
            .await
            .map_err(|source| RunError::Admin {
                addr: metrics_addr.to_string(),
                source,
            })?;
    info!(%admin_addr, "serving /metrics, /healthz and /readyz");
    let admin = tokio::spawn(async move { axum::serve(listener, router).await });

    let result = if args.leader_elect {
        leader::run_as_leader(
            &args,
            client.clone(),
            readiness.clone(),
            shutdown.clone(),
            |client| {
                run_controller(
                    args.clone(),
                    client,
                    settings.clone(),
                    enabled.clone(),
                    metrics.clone(),
                    readiness.clone(),
                    shutdown.clone(),
                )
            },
        )
        .await
    } else {
        run_controller(
            args.clone(),
            client,
            settings,
            enabled,
            metrics,
            readiness,
            shutdown,
        )
        .await;
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
    shutdown: Shutdown,
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
    let (deployment_store, deployment_writer) = reflector::store();
    let deployment_stream =
        watches::deployments(deployments, deployment_writer, cache_sync.clone());

    let pods_api: Api<Pod> = match &namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let (pod_store, pod_writer) = reflector::store();
    let pod_cache = Arc::new(pods::PodCacheState::default());
    let pod_watch = tokio::spawn(
        pods::watch(pods_api, pod_writer, pod_cache.clone())
            .for_each(|_| futures::future::ready(())),
    );
    let workers = WorkerSignals::new(crate::workers::listen_fn(Default::default()));
    metrics.worker_listeners.set(0);

    let (wpa_store, wpa_writer) = reflector::store();
    let status_writer = StatusWriter::new(
        client.clone(),
        metrics.status_writes_pending.clone(),
        shutdown.clone(),
    );
    let ctx = Arc::new(Context {
        client: client.clone(),
        registry: registry.clone(),
        targets: Targets::new(client.clone(), deployment_store),
        plan: PlanSettings {
            scaler: settings,
            dry_run: args.dry_run,
            resync: Duration::from_secs(args.resync_period),
            drain: args.drain_settings(),
        },
        enabled,
        metrics,
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: "workerpodautoscaler".to_string(),
                instance: std::env::var("POD_NAME").ok(),
            },
        ),
        memories: Memories::default(),
        status_writer,
        shutdown: shutdown.clone(),
        workers: workers.clone(),
        pods: pod_store,
        pod_cache,
        idle_window: Duration::from_secs(args.idle_window),
        failures: Default::default(),
    });
    let status_writes = tokio::spawn(ctx.status_writer.clone().run());
    let wpa_stream = watches::wpas(wpas, wpa_writer, cache_sync.clone(), ctx.clone());

    // Sweep for WPAs deleted while no watch was open (once the WPA cache is complete).
    let sweep_ctx = ctx.clone();
    let sweep_store = wpa_store.clone();
    let sweeper = tokio::spawn(async move {
        let mut tick = tokio::time::interval(sweep_ctx.plan.resync);
        loop {
            tick.tick().await;
            if cache_sync.all_synced() {
                sweep_ctx.sweep(&sweep_store);
            }
        }
    });

    let mapper_store = wpa_store.clone();
    let controller = Controller::for_stream(wpa_stream, wpa_store)
        .with_config(kube::runtime::controller::Config::default().concurrency(args.wpa_threads))
        .watches_stream(deployment_stream, move |deployment: Deployment| {
            watches::wpas_scaling(&mapper_store, &deployment)
        })
        .reconcile_on(watches::queue_wakeups(registry.clone()))
        .graceful_shutdown_on(shutdown.wait());
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
    pod_watch.abort();
    workers.shutdown();
    // Statuses not written yet are dropped: the next leader recomputes them.
    status_writes.abort();
    registry.shutdown().await;
    info!("controller stopped");
}
