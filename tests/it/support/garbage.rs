//! Misbehaving servers on 127.0.0.1 for fault tests: a raw TCP server that answers any
//! protocol with nonsense, truncated frames, endless floods or silence, and an HTTP server
//! whose JSON bodies break the HTTP provider's schema.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// How the raw server treats every connection.
#[derive(Debug, Clone)]
pub enum Behaviour {
    /// Once the client has sent something, write these bytes and close.
    ReplyAndClose(Vec<u8>),
    /// Answer every chunk the client sends with these bytes; never close.
    ReplyAndKeep(Vec<u8>),
    /// Once the client has sent something, write `prefix`, then `filler` over and over
    /// (a stream that never completes a frame).
    Flood { prefix: Vec<u8>, filler: Vec<u8> },
    /// Accept, read and never answer.
    Silent,
}

/// A raw TCP server; stops (with all its connections) when dropped.
pub struct GarbageServer {
    pub port: u16,
    accepted: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl GarbageServer {
    pub async fn start(behaviour: Behaviour) -> GarbageServer {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind garbage server");
        let port = listener.local_addr().expect("local addr").port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        let task = tokio::spawn(async move {
            // Connection tasks live in the set, so aborting this task ends them too.
            let mut connections = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                counter.fetch_add(1, Ordering::SeqCst);
                connections.spawn(serve(stream, behaviour.clone()));
                // Reap finished connections so the set does not grow without bound.
                while connections.try_join_next().is_some() {}
            }
        });
        GarbageServer {
            port,
            accepted,
            task,
        }
    }

    /// Connections accepted so far (a client that never connects tests nothing).
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for GarbageServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(mut stream: TcpStream, behaviour: Behaviour) {
    let mut buf = vec![0u8; 4096];
    match behaviour {
        Behaviour::ReplyAndClose(reply) => {
            if matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {
                let _ = stream.write_all(&reply).await;
                let _ = stream.flush().await;
            }
            let _ = stream.shutdown().await;
        }
        Behaviour::ReplyAndKeep(reply) => loop {
            match stream.read(&mut buf).await {
                Ok(n) if n > 0 => {
                    if stream.write_all(&reply).await.is_err() {
                        return;
                    }
                }
                _ => return,
            }
        },
        Behaviour::Flood { prefix, filler } => {
            if !matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {
                return;
            }
            if stream.write_all(&prefix).await.is_err() {
                return;
            }
            // Bounded rate: enough to keep a parser waiting, not enough to load the machine.
            loop {
                if stream.write_all(&filler).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Behaviour::Silent => while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {},
    }
}

/// HTTP endpoints answering 200 with bodies the HTTP provider must refuse, plus `/good/N`
/// (`{"visible": N}`) and `/max` (`visible` = u64::MAX, valid but enormous).
pub async fn bad_json_server() -> SocketAddr {
    let body = |text: &'static str| get(move || async move { text });
    let app = Router::new()
        .route("/not-json", body("<html>It works!</html>"))
        .route("/truncated-json", body(r#"{"visible": 12, "in_fl"#))
        .route("/negative", body(r#"{"visible": -7}"#))
        .route(
            "/negative-in-flight",
            body(r#"{"visible": 1, "in_flight": -1}"#),
        )
        .route("/too-large", body(r#"{"visible": 100000000000000000000}"#))
        .route("/exponent", body(r#"{"visible": 1e300}"#))
        .route("/fraction", body(r#"{"visible": 2.5}"#))
        .route("/string", body(r#"{"visible": "12"}"#))
        .route("/bool", body(r#"{"visible": true}"#))
        .route("/array", body(r#"[{"visible": 1}]"#))
        .route("/null", body("null"))
        .route("/idle-string", body(r#"{"visible": 0, "idle": "yes"}"#))
        .route("/max", body(r#"{"visible": 18446744073709551615}"#))
        .route(
            "/good/{n}",
            get(
                |axum::extract::Path(n): axum::extract::Path<u64>| async move {
                    format!(r#"{{"visible": {n}}}"#)
                },
            ),
        );
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind bad JSON server");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}
