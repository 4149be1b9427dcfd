//! Watch streams: newline-delimited JSON `{"type": ..., "object": ...}` events over one
//! chunked HTTP response, as the API server sends them.
//!
//! - Without a resourceVersion (or with "0"), or with `sendInitialEvents=true`, the stream
//!   starts with synthetic ADDED events for the current objects (then, for
//!   `sendInitialEvents`, a BOOKMARK annotated `k8s.io/initial-events-end`).
//! - With a resourceVersion N it replays the retained history after N; if N is older than the
//!   history it sends an ERROR event carrying a 410 Expired Status and ends, which makes
//!   kube's watcher relist.
//! - With `allowWatchBookmarks=true` it sends a BOOKMARK every bookmark interval.
//! - It ends after `timeoutSeconds`, when the client goes away, or when the test drops all
//!   watches.
//! - With a label or field selector, a modification that makes an object start (stop)
//!   matching is sent as ADDED (DELETED).

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::Response;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};

use super::objects::partial_metadata;
use super::ops::ListQuery;
use super::resources::ResourceDef;
use super::shared::Shared;
use super::status::ApiError;
use super::store::{EventType, StoredEvent};

/// A parsed watch request.
#[derive(Debug, Clone)]
pub struct WatchRequest {
    pub def: ResourceDef,
    pub namespace: Option<String>,
    pub resource_version: Option<String>,
    pub query: ListQuery,
    pub bookmarks: bool,
    pub send_initial_events: bool,
    pub timeout: Option<Duration>,
    /// Send objects as `PartialObjectMetadata` (kube's `metadata_watcher`).
    pub metadata_only: bool,
}

impl WatchRequest {
    /// The event line for a stored event, or `None` when this watch does not see it.
    fn line_for(&self, event: &StoredEvent) -> Option<String> {
        if event.key.store_id != self.def.store_id() {
            return None;
        }
        if let Some(ns) = &self.namespace
            && event.key.namespace != *ns
        {
            return None;
        }
        let now = self.query.matches(&event.object);
        let before = event
            .previous
            .as_ref()
            .is_some_and(|previous| self.query.matches(previous));
        let event_type = match (event.event_type, before, now) {
            (EventType::Added, _, true) => "ADDED",
            (EventType::Modified, true, true) => "MODIFIED",
            (EventType::Modified, false, true) => "ADDED",
            (EventType::Modified, true, false) => "DELETED",
            (EventType::Deleted, b, n) if b || n => "DELETED",
            _ => return None,
        };
        Some(self.object_line(event_type, &event.object))
    }

    fn object_line(&self, event_type: &str, object: &Value) -> String {
        if self.metadata_only {
            event_line(event_type, &partial_metadata(object))
        } else {
            event_line(event_type, object)
        }
    }

    fn bookmark(&self, resource_version: u64, initial_events_end: bool) -> String {
        let mut metadata = json!({"resourceVersion": resource_version.to_string()});
        if initial_events_end {
            metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let object = json!({
            "kind": self.def.kind,
            "apiVersion": self.def.gvr.api_version(),
            "metadata": metadata,
        });
        event_line("BOOKMARK", &object)
    }
}

fn event_line(event_type: &str, object: &Value) -> String {
    let mut line = json!({"type": event_type, "object": object}).to_string();
    line.push('\n');
    line
}

fn gone_line(message: &str) -> String {
    event_line("ERROR", &ApiError::gone(message).to_status())
}

/// Starts a watch. `fault` is set when an injected fault shapes the stream.
pub fn start(
    shared: &Arc<Shared>,
    request: WatchRequest,
    fault: &mut Option<String>,
) -> Result<Response, ApiError> {
    let resume_from = match request.resource_version.as_deref() {
        None | Some("") | Some("0") => None,
        Some(rv) => Some(
            rv.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {rv:?}")))?,
        ),
    };
    if resume_from.is_some() && shared.take_gone_on_resume() {
        *fault = Some("injected 410 Gone on watch resume".to_string());
        return Ok(stream_response(
            shared,
            request,
            vec![gone_line("too old resource version (injected)")],
            None,
        ));
    }

    let mut initial = Vec::new();
    let events = {
        let store = shared.store();
        match resume_from.filter(|_| !request.send_initial_events) {
            None => {
                let store_id = request.def.store_id();
                for (_, object) in store.list(&store_id, request.namespace.as_deref()) {
                    if request.query.matches(object) {
                        initial.push(request.object_line("ADDED", object));
                    }
                }
                if request.send_initial_events && request.bookmarks {
                    initial.push(request.bookmark(store.resource_version(), true));
                }
            }
            Some(rv) => match store.events_since(rv) {
                Some(events) => {
                    initial.extend(events.iter().filter_map(|e| request.line_for(e)));
                }
                None => {
                    let message = format!("too old resource version: {rv} (history starts later)");
                    drop(store);
                    return Ok(stream_response(
                        shared,
                        request,
                        vec![gone_line(&message)],
                        None,
                    ));
                }
            },
        }
        Some((store.subscribe(), store.resource_version()))
    };
    Ok(stream_response(shared, request, initial, events))
}

/// Spawns the task that writes the stream; `live` is the event subscription and the
/// resourceVersion it starts after (`None`: send `initial` and end).
fn stream_response(
    shared: &Arc<Shared>,
    request: WatchRequest,
    initial: Vec<String>,
    live: Option<(broadcast::Receiver<Arc<StoredEvent>>, u64)>,
) -> Response {
    let (sender, receiver) = mpsc::channel::<String>(64);
    let shared = Arc::clone(shared);
    // Subscribe to "drop all watches" now, so a drop right after this call still counts.
    let epoch = shared.watch_epoch.subscribe();
    tokio::spawn(async move {
        shared.open_watches.fetch_add(1, Ordering::SeqCst);
        run_stream(&shared, &request, initial, live, sender, epoch).await;
        shared.open_watches.fetch_sub(1, Ordering::SeqCst);
    });
    let body = futures::stream::unfold(receiver, |mut receiver| async move {
        let line = receiver.recv().await?;
        Some((Ok::<_, Infallible>(line), receiver))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(body))
        .unwrap_or_else(|_| Response::new(Body::empty()))
}

async fn run_stream(
    shared: &Shared,
    request: &WatchRequest,
    initial: Vec<String>,
    live: Option<(broadcast::Receiver<Arc<StoredEvent>>, u64)>,
    sender: mpsc::Sender<String>,
    mut epoch: tokio::sync::watch::Receiver<u64>,
) {
    for line in initial {
        if sender.send(line).await.is_err() {
            return;
        }
    }
    let Some((mut events, mut last_rv)) = live else {
        return;
    };
    let deadline = tokio::time::sleep(request.timeout.unwrap_or(Duration::from_secs(1800)));
    tokio::pin!(deadline);
    let interval = shared
        .settings()
        .bookmark_interval
        .max(Duration::from_millis(10));
    let mut bookmarks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    loop {
        let line = tokio::select! {
            // Biased: ending the stream (timeout, dropped watches, gone client) wins over
            // pending events, so "drop all watches" takes effect before later writes.
            biased;
            _ = &mut deadline => return,
            _ = epoch.changed() => return,
            _ = sender.closed() => return,
            _ = bookmarks.tick(), if request.bookmarks => request.bookmark(last_rv, false),
            received = events.recv() => match received {
                Ok(event) => {
                    last_rv = event.resource_version;
                    match request.line_for(&event) {
                        Some(line) => line,
                        None => continue,
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    // Too slow a reader: the real server also ends such watches with 410.
                    let _ = sender.send(gone_line("watch fell behind the event history")).await;
                    return;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
        };
        if sender.send(line).await.is_err() {
            return;
        }
    }
}
