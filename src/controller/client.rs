//! The Kubernetes client: from the kubeconfig flag or the environment, with the client-side
//! API pacing (`--k8s-api-qps`, `--k8s-api-burst`) as a tower layer.

use kube::Client;
use kube::client::ClientBuilder;
use kube::config::{KubeConfigOptions, Kubeconfig};

use super::metrics::Metrics;
use super::ratelimit::{ApiRateLimitLayer, Pacing, PacingReport};
use super::shutdown::Shutdown;
use super::{RunArgs, RunError};

pub async fn client_for(
    args: &RunArgs,
    metrics: &Metrics,
    shutdown: &Shutdown,
) -> Result<Client, RunError> {
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
        match ApiRateLimitLayer::new(
            Pacing {
                qps: args.k8s_api_qps,
                burst: args.k8s_api_burst,
                scale_qps: args.k8s_api_scale_qps,
                scale_burst: args.k8s_api_scale_burst,
            },
            Some(PacingReport {
                wait_seconds: metrics.api_pacing_wait.clone(),
                requests: metrics.api_requests.clone(),
            }),
            shutdown.clone(),
        ) {
            Some(pacing) => builder.with_layer(&pacing).build(),
            None => builder.build(),
        },
    )
}
