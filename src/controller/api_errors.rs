//! Kubernetes API failures as a person reads them: one short line with the HTTP status and
//! the API server's reason (never a response body), logged once per distinct reason rather
//! than on every retry.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::sync::lock;

/// Longest reason shown: a decode error names a line and column, not the body, but an
/// unexpected error text could be long.
const MAX_REASON: usize = 300;

/// Why a request failed, in one short line.
pub fn reason(error: &kube::Error) -> String {
    shorten(match error {
        kube::Error::Api(status) => status_line(status),
        kube::Error::SerdeError(e) => undecodable(e),
        other => other.to_string(),
    })
}

/// What could not be decoded, by kind and position: serde's own message quotes the value it
/// choked on, which is a piece of the body (a whole string field, say).
fn undecodable(e: &serde_json::Error) -> String {
    let kind = match e.classify() {
        serde_json::error::Category::Io => "a read error",
        serde_json::error::Category::Syntax => "not JSON",
        serde_json::error::Category::Data => "JSON of an unexpected shape",
        serde_json::error::Category::Eof => "JSON cut short",
    };
    format!(
        "the answer could not be decoded ({kind} at line {} column {})",
        e.line(),
        e.column()
    )
}

/// `HTTP 403 Forbidden: pods is forbidden: ...`.
pub fn status_line(status: &kube::core::Status) -> String {
    let mut line = format!("HTTP {}", status.code);
    if !status.reason.is_empty() {
        line.push(' ');
        line.push_str(&status.reason);
    }
    if !status.message.is_empty() {
        line.push_str(": ");
        line.push_str(&status.message);
    }
    line
}

/// `text` cut to [`MAX_REASON`] bytes (on a character boundary), marked with `...`.
pub fn shorten(mut text: String) -> String {
    if text.len() > MAX_REASON {
        let mut end = MAX_REASON;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str("...");
    }
    text
}

/// The last failure of each step that is retried for each object (a WPA's reconcile, its
/// status write, ...), so that a failure repeating the same way is logged once.
#[derive(Debug, Default)]
pub struct FailureLog {
    last: Mutex<HashMap<(String, &'static str), String>>,
}

/// How to log one failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// First seen, or a new reason: worth a WARN line.
    New,
    /// The same reason as last time: DEBUG at most.
    Again,
}

impl FailureLog {
    /// Records that `step` failed for `object` with `reason`.
    pub fn failed(&self, object: &str, step: &'static str, reason: &str) -> Seen {
        let mut last = lock(&self.last);
        let key = (object.to_string(), step);
        if last.get(&key).is_some_and(|r| r == reason) {
            return Seen::Again;
        }
        last.insert(key, reason.to_string());
        Seen::New
    }

    /// Records that `step` worked for `object`; returns the reason it had failed with, if
    /// it had.
    pub fn succeeded(&self, object: &str, step: &'static str) -> Option<String> {
        let mut last = lock(&self.last);
        if last.is_empty() {
            return None;
        }
        last.remove(&(object.to_string(), step))
    }

    /// Forgets every step of `object` (a deleted WPA).
    pub fn forget(&self, object: &str) {
        lock(&self.last).retain(|(what, _), _| what != object);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: u16, reason: &str, message: &str) -> kube::Error {
        kube::Error::Api(Box::new(kube::core::Status {
            code,
            reason: reason.to_string(),
            message: message.to_string(),
            ..kube::core::Status::default()
        }))
    }

    #[test]
    fn reasons_give_the_status_never_a_body() {
        assert_eq!(
            reason(&api(409, "Conflict", "the object has been modified")),
            "HTTP 409 Conflict: the object has been modified"
        );
        assert_eq!(reason(&api(500, "", "")), "HTTP 500");
        // serde would quote the string it choked on: a piece of the body.
        let body = format!("[\"{}\"]", "SECRET-".repeat(100));
        let undecodable = serde_json::from_str::<Vec<u32>>(&body).expect_err("not numbers");
        let text = reason(&kube::Error::SerdeError(undecodable));
        assert_eq!(
            text,
            "the answer could not be decoded (JSON of an unexpected shape at line 1 column 703)"
        );
        let cut = serde_json::from_str::<Vec<u32>>("[1,").expect_err("cut short");
        assert!(reason(&kube::Error::SerdeError(cut)).contains("JSON cut short"));
    }

    #[test]
    fn long_reasons_are_cut_on_a_character_boundary() {
        let cut = shorten("é".repeat(400));
        assert!(cut.ends_with("..."));
        assert!(cut.len() <= MAX_REASON + 3);
        assert_eq!(shorten("short".into()), "short");
    }

    #[test]
    fn a_failure_is_new_once_per_reason_until_it_recovers() {
        let log = FailureLog::default();
        assert_eq!(log.failed("ns/a", "scale", "HTTP 500"), Seen::New);
        assert_eq!(log.failed("ns/a", "scale", "HTTP 500"), Seen::Again);
        // Another WPA, another step or another reason is news.
        assert_eq!(log.failed("ns/ab", "scale", "HTTP 500"), Seen::New);
        assert_eq!(log.failed("ns/a", "status", "HTTP 500"), Seen::New);
        assert_eq!(log.failed("ns/a", "scale", "HTTP 503"), Seen::New);
        assert_eq!(log.succeeded("ns/a", "scale").as_deref(), Some("HTTP 503"));
        assert_eq!(log.succeeded("ns/a", "scale"), None);
        assert_eq!(log.failed("ns/a", "scale", "HTTP 503"), Seen::New);
        // Forgetting a WPA forgets all its steps, and no other WPA's.
        log.forget("ns/a");
        assert_eq!(log.failed("ns/a", "status", "HTTP 500"), Seen::New);
        assert_eq!(log.failed("ns/ab", "scale", "HTTP 500"), Seen::Again);
    }
}
