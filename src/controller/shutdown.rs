//! SIGTERM/SIGINT as a flag every part of the controller can check: the reconcile loop stops
//! taking work, and no scale write starts after the signal (one already on the wire finishes).
//! A second signal exits at once.

use std::sync::Arc;

use tokio::sync::watch;
use tracing::{info, warn};

#[derive(Clone)]
pub struct Shutdown {
    sender: Arc<watch::Sender<bool>>,
    requested: watch::Receiver<bool>,
}

impl Shutdown {
    /// Starts listening for SIGTERM and SIGINT.
    pub fn on_signals() -> Self {
        let shutdown = Self::new();
        let on_signal = shutdown.clone();
        tokio::spawn(async move {
            first_signal().await;
            info!("graceful shutdown requested: no new scale writes; finishing what is in flight");
            on_signal.request();
            first_signal().await;
            warn!("second signal: exiting now");
            std::process::exit(1);
        });
        shutdown
    }

    /// A shutdown that is only requested by [`Shutdown::request`].
    pub fn new() -> Self {
        let (sender, requested) = watch::channel(false);
        Self {
            sender: Arc::new(sender),
            requested,
        }
    }

    /// Requests shutdown (e.g. when the leader lease is lost: the old leader stops writing).
    pub fn request(&self) {
        self.sender.send_replace(true);
    }

    pub fn requested(&self) -> bool {
        *self.requested.borrow()
    }

    /// Resolves once shutdown is requested.
    pub async fn wait(mut self) {
        // An error means the signal task is gone, which only happens at runtime shutdown.
        let _ = self.requested.wait_for(|requested| *requested).await;
    }
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

async fn first_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(e) => {
                warn!(error = %e, "cannot listen for SIGTERM; only SIGINT stops the controller");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
