//! Request recording: every HTTP request the double answers, with its outcome, so tests can
//! assert on what a client actually sent (e.g. which scale patches a controller made).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use serde_json::Value;

/// One answered request.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedRequest {
    pub at: jiff::Timestamp,
    pub method: String,
    /// The path without the query string.
    pub path: String,
    /// Decoded query parameters, in request order.
    pub query: Vec<(String, String)>,
    pub content_type: Option<String>,
    /// The Accept header (kube asks for `...;as=PartialObjectMetadata...` on metadata calls).
    pub accept: Option<String>,
    /// The body parsed as JSON (or YAML for apply); `Null` when empty, a string when
    /// unparseable.
    pub body: Value,
    /// The HTTP status of the response (200 for a watch, whatever its stream carried).
    pub status: u16,
    /// Set when an injected fault shaped the answer, e.g. "injected 500" or
    /// "injected 410 Gone on watch resume".
    pub fault: Option<String>,
}

impl RecordedRequest {
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn is_watch(&self) -> bool {
        matches!(self.query_param("watch"), Some("true" | "1"))
    }

    /// Not a GET: creates, updates, patches and deletes.
    pub fn is_write(&self) -> bool {
        self.method != "GET"
    }

    pub fn succeeded(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

#[derive(Debug)]
pub struct Recorder {
    requests: Mutex<Vec<RecordedRequest>>,
    enabled: AtomicBool,
    /// Held shared by a request from the moment it changes the store until it is recorded,
    /// and exclusively by readers of the recordings: a test that saw a change in the store
    /// then always finds the request that made it (a scale PATCH was once seen in the
    /// Deployment but not yet in the recordings).
    answering: RwLock<()>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            requests: Mutex::new(Vec::new()),
            enabled: AtomicBool::new(true),
            answering: RwLock::new(()),
        }
    }
}

impl Recorder {
    pub fn push(&self, request: RecordedRequest) {
        if self.enabled.load(Ordering::Relaxed) {
            self.lock().push(request);
        }
    }

    /// Recording is on by default; long benchmark runs may turn it off to bound memory.
    pub fn set_enabled(&self, enabled: bool) {
        self.enabled.store(enabled, Ordering::Relaxed);
    }

    /// Taken before a request touches the store and kept until it was pushed.
    pub fn answering(&self) -> RwLockReadGuard<'_, ()> {
        self.answering.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until the requests being answered now are done (their changes, what follows
    /// them such as a scale write's pods, and their recording); none starts while held.
    pub fn settled(&self) -> RwLockWriteGuard<'_, ()> {
        self.answering.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Every recorded request, after the requests being answered now were recorded.
    pub fn all(&self) -> Vec<RecordedRequest> {
        let _settled = self.settled();
        self.lock().clone()
    }

    pub fn clear(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<RecordedRequest>> {
        // A panicking test thread must not hide the recordings from the others.
        self.requests.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Replica counts of successful PUT/PATCH requests to `.../namespaces/{ns}/{resource}/{name}/scale`
/// of any resource, in order.
pub fn scale_writes(requests: &[RecordedRequest], namespace: &str, name: &str) -> Vec<i32> {
    let suffix = format!("/{name}/scale");
    let ns_segment = format!("/namespaces/{namespace}/");
    requests
        .iter()
        .filter(|r| matches!(r.method.as_str(), "PATCH" | "PUT") && r.succeeded())
        .filter(|r| r.path.ends_with(&suffix) && r.path.contains(&ns_segment))
        .filter_map(|r| r.body.pointer("/spec/replicas").and_then(Value::as_i64))
        .filter_map(|replicas| i32::try_from(replicas).ok())
        .collect()
}
