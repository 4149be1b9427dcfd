//! Runs the in-memory Kubernetes API server double standalone, for manual experiments
//! (kubectl, the controller binary) and benchmarks.
//!
//! ```text
//! cargo run --example apiserver_double -- --kubeconfig /tmp/double.kubeconfig
//! kubectl --kubeconfig /tmp/double.kubeconfig get deployments -A
//! ```
//!
//! Prints the server URL on stdout and serves until Ctrl-C.

#[path = "../tests/it/support/apiserver/mod.rs"]
mod apiserver;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// In-memory Kubernetes API server double.
#[derive(Debug, Parser)]
struct Args {
    /// Port to listen on (on 127.0.0.1); 0 picks a free port.
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Also write a kubeconfig file pointing at the server.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Simulate workload controllers: Deployments report their desired replicas as
    /// available after this many milliseconds.
    #[arg(long)]
    simulate_workloads_ms: Option<u64>,
    /// Interval of watch BOOKMARK events, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    bookmark_interval_ms: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();

    let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), args.port);
    let server = apiserver::ApiServerDouble::start_on(addr).await?;
    server.set_bookmark_interval(Duration::from_millis(args.bookmark_interval_ms));
    server.simulate_workloads(args.simulate_workloads_ms.map(Duration::from_millis));
    if let Some(path) = &args.kubeconfig {
        server.write_kubeconfig(path)?;
        eprintln!("kubeconfig written to {}", path.display());
    }
    println!("{}", server.url());

    tokio::signal::ctrl_c().await?;
    eprintln!("stopping after {} requests", server.recorded().len());
    Ok(())
}
