//! A watch's failures in the log. kube-runtime's watchers retry by themselves (with
//! backoff), so a failure that persists would be logged on every retry, and kube-client
//! would add the whole response body when it cannot decode one. Here each distinct reason
//! is logged once at WARN, with the HTTP status and the API server's reason, never a body;
//! repeats go to DEBUG, and the recovery is logged once at INFO.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use kube::runtime::watcher;

use super::api_errors::{reason, shorten, status_line};
use crate::sync::lock;

/// One watch's failure state.
#[derive(Debug)]
pub struct WatchLog {
    /// What is watched, for the log lines ("pods", "deployments", ...).
    watch: &'static str,
    /// Set while failing: a working watch costs one atomic load per event.
    failing: AtomicBool,
    last: Mutex<Option<String>>,
}

impl WatchLog {
    pub fn new(watch: &'static str) -> Self {
        Self {
            watch,
            failing: AtomicBool::new(false),
            last: Mutex::new(None),
        }
    }

    /// Takes in one item of the watch stream.
    pub fn observe<K>(&self, event: &Result<watcher::Event<K>, watcher::Error>) {
        match event {
            // Init starts every (re)list, also the retries of a failing one.
            Ok(watcher::Event::Init) => {}
            Ok(_) => {
                if self.failing.swap(false, Ordering::AcqRel)
                    && let Some(reason) = lock(&self.last).take()
                {
                    tracing::info!(watch = self.watch, %reason, "watch works again");
                }
            }
            Err(error) => {
                let reason = describe(error);
                self.failing.store(true, Ordering::Release);
                let mut last = lock(&self.last);
                if last.as_deref() == Some(reason.as_str()) {
                    tracing::debug!(watch = self.watch, %reason, "watch failed again");
                } else {
                    tracing::warn!(watch = self.watch, %reason, "watch failed; retrying with backoff");
                    *last = Some(reason);
                }
            }
        }
    }
}

/// Why a watch failed, in one short line: the step, then the API server's status and
/// reason, or what could not be decoded (without the body).
pub fn describe(error: &watcher::Error) -> String {
    match error {
        watcher::Error::InitialListFailed(e) => format!("list: {}", reason(e)),
        watcher::Error::WatchStartFailed(e) => format!("watch start: {}", reason(e)),
        watcher::Error::WatchFailed(e) => format!("watch: {}", reason(e)),
        watcher::Error::WatchError(status) => shorten(format!("watch: {}", status_line(status))),
        watcher::Error::NoResourceVersion => {
            "list: no metadata.resourceVersion in the answer".to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_name_the_step_and_the_status_never_a_body() {
        let forbidden =
            watcher::Error::InitialListFailed(kube::Error::Api(Box::new(kube::core::Status {
                code: 403,
                reason: "Forbidden".to_string(),
                message: "pods is forbidden: User \"x\" cannot list resource \"pods\"".to_string(),
                ..kube::core::Status::default()
            })));
        assert_eq!(
            describe(&forbidden),
            "list: HTTP 403 Forbidden: pods is forbidden: User \"x\" cannot list resource \"pods\""
        );
        let body = format!(
            "{{\"kind\":\"PodList\",\"items\":[{}]}}",
            "{\"x\":1},".repeat(5000)
        );
        let undecodable = serde_json::from_str::<Vec<u32>>(&body).expect_err("not a list");
        let reason = describe(&watcher::Error::InitialListFailed(kube::Error::SerdeError(
            undecodable,
        )));
        assert!(
            reason.starts_with("list: the answer could not be decoded ("),
            "{reason}"
        );
        assert!(!reason.contains("PodList"), "{reason}");
        assert_eq!(
            describe(&watcher::Error::NoResourceVersion),
            "list: no metadata.resourceVersion in the answer"
        );
    }
}
