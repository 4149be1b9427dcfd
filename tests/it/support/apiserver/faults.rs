//! Fault injection, programmable while the server runs: error responses and added latency
//! for requests matching a method and path substring, limited to N requests or a duration.
//! Watch-specific faults (dropping open watches, 410 on resume) live on the server handle
//! because they act on watch streams, but they are recorded the same way.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What a matching request gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultAction {
    /// Answer with this HTTP status and a matching `Status` body instead of handling it.
    Status(u16),
    /// Handle the request normally, after this delay.
    Latency(Duration),
    /// Answer with this HTTP status and this body as it is (JSON content type), e.g. a
    /// list a client cannot decode.
    Reply(u16, String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum FaultLimit {
    Always,
    Times(usize),
    Until(Instant),
}

/// A rule: which requests it matches, what it does, and for how long.
///
/// ```ignore
/// server.inject(Fault::status(500).method("PATCH").path_contains("/scale").times(2));
/// server.inject(Fault::latency(Duration::from_millis(300)).path_contains("/leases/"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    method: Option<String>,
    path_contains: String,
    query_contains: Option<String>,
    action: FaultAction,
    limit: FaultLimit,
}

impl Fault {
    /// Answer every matching request with `code` (500, 409, 429, 503, ...).
    pub fn status(code: u16) -> Self {
        Fault {
            method: None,
            path_contains: String::new(),
            query_contains: None,
            action: FaultAction::Status(code),
            limit: FaultLimit::Always,
        }
    }

    /// Answer every matching request with `code` and `body` verbatim.
    pub fn reply(code: u16, body: &str) -> Self {
        Fault {
            action: FaultAction::Reply(code, body.to_string()),
            ..Fault::status(500)
        }
    }

    /// Delay every matching request by `delay`.
    pub fn latency(delay: Duration) -> Self {
        Fault {
            action: FaultAction::Latency(delay),
            ..Fault::status(500)
        }
    }

    /// Only requests with this HTTP method (case-insensitive).
    pub fn method(mut self, method: &str) -> Self {
        self.method = Some(method.to_ascii_uppercase());
        self
    }

    /// Only requests whose path (without query) contains `fragment`.
    pub fn path_contains(mut self, fragment: &str) -> Self {
        self.path_contains = fragment.to_string();
        self
    }

    /// Only requests whose raw query string contains `fragment`, e.g. "watch=true".
    pub fn query_contains(mut self, fragment: &str) -> Self {
        self.query_contains = Some(fragment.to_string());
        self
    }

    /// Only the next `n` matching requests.
    pub fn times(mut self, n: usize) -> Self {
        self.limit = FaultLimit::Times(n);
        self
    }

    /// Only matching requests in the next `duration`.
    pub fn for_duration(mut self, duration: Duration) -> Self {
        self.limit = FaultLimit::Until(Instant::now() + duration);
        self
    }

    fn matches(&self, method: &str, path: &str, query: &str) -> bool {
        self.method.as_deref().is_none_or(|m| m == method)
            && path.contains(&self.path_contains)
            && self
                .query_contains
                .as_deref()
                .is_none_or(|q| query.contains(q))
    }

    fn expired(&self) -> bool {
        match self.limit {
            FaultLimit::Always => false,
            FaultLimit::Times(n) => n == 0,
            FaultLimit::Until(deadline) => Instant::now() >= deadline,
        }
    }
}

/// Identifies an injected fault, to remove it early.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FaultId(u64);

/// What the active rules decide for one request.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FaultOutcome {
    pub latency: Duration,
    pub status: Option<u16>,
    /// The body to answer with, instead of a `Status` matching `status`.
    pub body: Option<String>,
}

impl FaultOutcome {
    /// A description for the request recording, if any fault applied.
    pub fn describe(&self) -> Option<String> {
        match (self.status, self.latency.is_zero()) {
            (Some(code), true) => Some(format!("injected {code}")),
            (Some(code), false) => Some(format!(
                "injected {code} after {} ms",
                self.latency.as_millis()
            )),
            (None, false) => Some(format!("injected latency {} ms", self.latency.as_millis())),
            (None, true) => None,
        }
    }
}

#[derive(Debug, Default)]
pub struct Faults {
    rules: Mutex<(u64, Vec<(FaultId, Fault)>)>,
}

impl Faults {
    pub fn add(&self, fault: Fault) -> FaultId {
        let mut guard = self.lock();
        guard.0 += 1;
        let id = FaultId(guard.0);
        guard.1.push((id, fault));
        id
    }

    pub fn remove(&self, id: FaultId) {
        self.lock().1.retain(|(rule_id, _)| *rule_id != id);
    }

    pub fn clear(&self) {
        self.lock().1.clear();
    }

    /// Applies the rules to one request: latencies add up, the first matching status rule
    /// answers. Counted rules are used up as they match.
    pub fn check(&self, method: &str, path: &str, query: &str) -> FaultOutcome {
        let mut guard = self.lock();
        let mut outcome = FaultOutcome::default();
        guard.1.retain(|(_, rule)| !rule.expired());
        for (_, rule) in guard.1.iter_mut() {
            if !rule.matches(method, path, query) {
                continue;
            }
            match &rule.action {
                FaultAction::Latency(delay) => outcome.latency += *delay,
                FaultAction::Status(code) => {
                    if outcome.status.is_some() {
                        continue;
                    }
                    outcome.status = Some(*code);
                }
                FaultAction::Reply(code, body) => {
                    if outcome.status.is_some() {
                        continue;
                    }
                    outcome.status = Some(*code);
                    outcome.body = Some(body.clone());
                }
            }
            if let FaultLimit::Times(n) = &mut rule.limit {
                *n = n.saturating_sub(1);
            }
        }
        outcome
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (u64, Vec<(FaultId, Fault)>)> {
        self.rules.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counted_status_faults_run_out() {
        let faults = Faults::default();
        faults.add(
            Fault::status(500)
                .method("patch")
                .path_contains("/scale")
                .times(2),
        );
        let check = || {
            faults.check(
                "PATCH",
                "/apis/apps/v1/namespaces/a/deployments/d/scale",
                "",
            )
        };
        assert_eq!(check().status, Some(500));
        assert_eq!(faults.check("GET", "/x/scale", "").status, None);
        assert_eq!(check().status, Some(500));
        assert_eq!(check().status, None);
    }

    #[test]
    fn latency_adds_up_and_can_be_removed() {
        let faults = Faults::default();
        let a = faults.add(Fault::latency(Duration::from_millis(5)));
        faults.add(Fault::latency(Duration::from_millis(7)).query_contains("watch=true"));
        assert_eq!(
            faults
                .check("GET", "/api", "watch=true")
                .latency
                .as_millis(),
            12
        );
        faults.remove(a);
        assert_eq!(faults.check("GET", "/api", "").latency, Duration::ZERO);
    }
}
