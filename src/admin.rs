//! The admin HTTP server: `/metrics` (Prometheus text format), `/healthz` (the process
//! serves requests) and `/readyz` (caches synced and, with leader election, the lease state
//! known).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;

/// Produces the `/metrics` body (Prometheus text format). The admin server knows nothing of
/// what is measured: the controller hands it this function.
pub type RenderMetrics = Arc<dyn Fn() -> Result<String, String> + Send + Sync>;

/// Readiness as the controller reports it.
#[derive(Clone, Default)]
pub struct Readiness {
    caches_synced: Arc<AtomicBool>,
    lease_known: Arc<AtomicBool>,
}

impl Readiness {
    /// Readiness for a controller that does (`true`) or does not run leader election.
    pub fn new(leader_election: bool) -> Self {
        let readiness = Self::default();
        readiness
            .lease_known
            .store(!leader_election, Ordering::SeqCst);
        readiness
    }
    pub fn set_caches_synced(&self) {
        self.caches_synced.store(true, Ordering::SeqCst);
    }
    pub fn set_lease_known(&self) {
        self.lease_known.store(true, Ordering::SeqCst);
    }
    pub fn is_ready(&self) -> bool {
        self.caches_synced.load(Ordering::SeqCst) && self.lease_known.load(Ordering::SeqCst)
    }
}

#[derive(Clone)]
struct AdminState {
    render: RenderMetrics,
    readiness: Readiness,
}

/// Binds the admin listener and builds its router; the caller serves them (e.g. with
/// `axum::serve`) for as long as it wants.
pub async fn bind(
    addr: SocketAddr,
    render: RenderMetrics,
    readiness: Readiness,
) -> std::io::Result<(SocketAddr, Router, TcpListener)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let router = Router::new()
        .route("/metrics", get(serve_metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(serve_readyz))
        .with_state(AdminState { render, readiness });
    Ok((local, router, listener))
}

async fn serve_metrics(State(state): State<AdminState>) -> impl IntoResponse {
    match (state.render)() {
        Ok(text) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            text,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e).into_response(),
    }
}

async fn serve_readyz(State(state): State<AdminState>) -> impl IntoResponse {
    if state.readiness.is_ready() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get_status(addr: SocketAddr, path: &str) -> (u16, String) {
        let response = reqwest::get(format!("http://{addr}{path}"))
            .await
            .expect("request");
        let status = response.status().as_u16();
        (status, response.text().await.expect("body"))
    }

    #[tokio::test]
    async fn serves_health_readiness_and_metrics() {
        let render: RenderMetrics = Arc::new(|| Ok("wpa_worker_desired 4\n".to_string()));
        let readiness = Readiness::new(true);
        let (addr, router, listener) = bind(
            "127.0.0.1:0".parse().expect("addr"),
            render,
            readiness.clone(),
        )
        .await
        .expect("binds");
        let server = tokio::spawn(async move { axum::serve(listener, router).await });

        assert_eq!(get_status(addr, "/healthz").await, (200, "ok".to_string()));
        assert_eq!(get_status(addr, "/readyz").await.0, 503);
        readiness.set_caches_synced();
        assert_eq!(
            get_status(addr, "/readyz").await.0,
            503,
            "lease state still unknown"
        );
        readiness.set_lease_known();
        assert_eq!(get_status(addr, "/readyz").await.0, 200);
        let (status, body) = get_status(addr, "/metrics").await;
        assert_eq!(status, 200);
        assert!(body == "wpa_worker_desired 4\n", "{body}");
        server.abort();
    }
}
