//! HTTP provider: any endpoint that reports a queue's metrics as JSON.
//!
//! `http+json://host/path` (or `https+json://`) is fetched with `GET http(s)://host/path`
//! once per poll, with the provider request timeout and, when the WPA's Secret gives one,
//! the `Authorization` header. The answer must be a JSON object:
//!
//! ```json
//! {"visible": 12, "in_flight": 3, "delayed": null, "sent_per_minute": 40,
//!  "consumers": 2, "idle": false}
//! ```
//!
//! | field | type | meaning |
//! |---|---|---|
//! | `visible` | integer >= 0, **required** | messages waiting |
//! | `in_flight` | integer >= 0 or null/absent | messages being processed |
//! | `delayed` | integer >= 0 or null/absent | messages not deliverable yet |
//! | `sent_per_minute` | integer >= 0 or null/absent | publish rate |
//! | `consumers` | integer >= 0 or null/absent | attached workers |
//! | `idle` | boolean or null/absent | the endpoint's own idleness verdict |
//! | `workers` | list or null/absent | per worker: `{"pod": name, "ip": address, "busy": bool}` (`pod` or `ip` or both, `busy` required), for worker-aware scale-in |
//!
//! Other fields are ignored. Status codes: 2xx is read, 404 means the queue does not
//! exist, 401/403 are denied, 5xx and timeouts are unavailability; anything else, and any
//! body that does not fit the schema, is a bad response naming the problem.
//!
//! **Cannot see** anything the endpoint does not report; `null` stays unknown.

use std::time::Duration;

use async_trait::async_trait;
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, HeaderValue};
use serde_json::Value;

pub mod uri;

use super::provider::{ConnectFuture, ProviderSpec, ProviderUri, boxed};
use super::{
    ConsumerReport, Credentials, ProviderOptions, QueueError, QueueMetrics, QueueProvider,
};
use uri::HttpUri;

/// Larger bodies are refused: the schema is a handful of numbers.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// Polls one HTTP metrics endpoint; see the module documentation.
pub struct HttpProvider {
    label: String,
    url: reqwest::Url,
    client: reqwest::Client,
    authorization: Option<HeaderValue>,
    timeout: Duration,
}

impl HttpProvider {
    /// Builds the client; no request is made until the first poll.
    pub fn new(
        uri: &HttpUri,
        creds: &Credentials,
        opts: &ProviderOptions,
    ) -> Result<Self, QueueError> {
        let label = uri.redacted();
        let (url, authorization) = checked_config(uri, creds, &label)?;
        let client = reqwest::Client::builder()
            .timeout(opts.request_timeout)
            .connect_timeout(opts.request_timeout)
            .build()
            .map_err(|e| {
                QueueError::Config(format!("{label}: HTTP client: {}", e.without_url()))
            })?;
        Ok(Self {
            label,
            url,
            client,
            authorization,
            timeout: opts.request_timeout,
        })
    }

    /// Same as [`HttpProvider::new`]; async for symmetry with the other providers.
    pub async fn connect(
        uri: &HttpUri,
        creds: &Credentials,
        opts: &ProviderOptions,
    ) -> Result<Self, QueueError> {
        Self::new(uri, creds, opts)
    }

    fn unavailable(&self, detail: String) -> QueueError {
        QueueError::Unavailable {
            queue: self.label.clone(),
            detail,
        }
    }

    fn bad(&self, detail: String) -> QueueError {
        QueueError::BadResponse {
            queue: self.label.clone(),
            detail,
        }
    }

    async fn fetch(&self) -> Result<Vec<u8>, QueueError> {
        let mut request = self.client.get(self.url.clone());
        if let Some(auth) = &self.authorization {
            request = request.header(AUTHORIZATION, auth.clone());
        }
        // reqwest's errors quote the URL, which may hold a token: drop it.
        let describe = |e: reqwest::Error| {
            if e.is_timeout() {
                format!("no answer within {:?}", self.timeout)
            } else {
                e.without_url().to_string()
            }
        };
        let mut response = request
            .send()
            .await
            .map_err(|e| self.unavailable(describe(e)))?;
        let status = response.status();
        match status {
            s if s.is_success() => {}
            StatusCode::NOT_FOUND => {
                return Err(QueueError::NotFound {
                    queue: self.label.clone(),
                });
            }
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                return Err(QueueError::Denied {
                    queue: self.label.clone(),
                    detail: format!("HTTP {status}"),
                });
            }
            s if s.is_server_error() => return Err(self.unavailable(format!("HTTP {status}"))),
            s => return Err(self.bad(format!("unexpected HTTP {s}"))),
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| self.unavailable(describe(e)))?
        {
            if body.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(self.bad(format!("body larger than {MAX_BODY_BYTES} bytes")));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

pub fn check_config(uri: &HttpUri, creds: &Credentials) -> Result<(), QueueError> {
    let label = uri.redacted();
    checked_config(uri, creds, &label).map(|_| ())
}

fn checked_config(
    uri: &HttpUri,
    creds: &Credentials,
    label: &str,
) -> Result<(reqwest::Url, Option<HeaderValue>), QueueError> {
    let url = reqwest::Url::parse(&uri.url)
        .map_err(|e| QueueError::Config(format!("{label}: bad URL: {e}")))?;
    let authorization = match &creds.authorization {
        Some(value) => {
            let mut header = HeaderValue::from_str(value).map_err(|_| {
                QueueError::Config(format!(
                    "{label}: the authorization credential is not a valid HTTP header value"
                ))
            })?;
            header.set_sensitive(true);
            Some(header)
        }
        None => None,
    };
    Ok((url, authorization))
}

#[async_trait]
impl QueueProvider for HttpProvider {
    async fn poll(&mut self) -> Result<QueueMetrics, QueueError> {
        let sampled_at = jiff::Timestamp::now();
        let body = self.fetch().await?;
        parse_metrics(&body, sampled_at).map_err(|detail| self.bad(detail))
    }
}

/// Reads the documented schema; the error names the offending field.
pub fn parse_metrics(body: &[u8], sampled_at: jiff::Timestamp) -> Result<QueueMetrics, String> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
    let Value::Object(fields) = value else {
        return Err("the body is not a JSON object".to_string());
    };
    let count = |name: &str| -> Result<Option<u64>, String> {
        match fields.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => match (n.as_u64(), n.as_f64()) {
                (Some(v), _) => Ok(Some(v)),
                (None, Some(f)) if f < 0.0 => Err(format!("`{name}` is negative ({n})")),
                // Beyond u64 serde_json only keeps a float: say "too large", not "not whole".
                (None, Some(f)) if f.is_finite() && f.fract() == 0.0 => {
                    Err(format!("`{name}` is too large ({n}; at most {})", u64::MAX))
                }
                (None, _) => Err(format!("`{name}` is not a whole number ({n})")),
            },
            Some(other) => Err(format!(
                "`{name}` must be a non-negative integer or null, not {}",
                json_type(other)
            )),
        }
    };
    let visible = count("visible")?.ok_or("`visible` is missing (or null)")?;
    let idle = match fields.get("idle") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(other) => {
            return Err(format!(
                "`idle` must be a boolean or null, not {}",
                json_type(other)
            ));
        }
    };
    Ok(QueueMetrics {
        missing: Vec::new(),
        visible,
        in_flight: count("in_flight")?,
        delayed: count("delayed")?,
        sent_per_minute: count("sent_per_minute")?,
        consumers: count("consumers")?,
        idle,
        partial: None,
        sampled_at,
        workers: parse_workers(fields.get("workers"))?,
    })
}

/// Most entries read from `workers`: the list names pods of one workload.
const MAX_WORKERS: usize = 10_000;

/// The optional `workers` list: `[{"pod": "name", "busy": true}, {"ip": "10.0.0.7",
/// "busy": false}]`; each entry names its pod (`pod`, `ip` or both) and says `busy`.
fn parse_workers(value: Option<&Value>) -> Result<Option<Vec<ConsumerReport>>, String> {
    let entries = match value {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(entries)) => entries,
        Some(other) => {
            return Err(format!(
                "`workers` must be a list or null, not {}",
                json_type(other)
            ));
        }
    };
    if entries.len() > MAX_WORKERS {
        return Err(format!(
            "`workers` lists {} entries; at most {MAX_WORKERS} are read",
            entries.len()
        ));
    }
    let mut reports = Vec::with_capacity(entries.len());
    for (index, entry) in entries.iter().enumerate() {
        let Value::Object(entry) = entry else {
            return Err(format!(
                "`workers[{index}]` must be an object, not {}",
                json_type(entry)
            ));
        };
        let text = |name: &str| -> Result<Option<String>, String> {
            match entry.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) if !s.is_empty() && s.len() <= 253 => Ok(Some(s.clone())),
                Some(Value::String(_)) => Err(format!(
                    "`workers[{index}].{name}` must be 1 to 253 characters"
                )),
                Some(other) => Err(format!(
                    "`workers[{index}].{name}` must be a string, not {}",
                    json_type(other)
                )),
            }
        };
        let (pod, ip) = (text("pod")?, text("ip")?);
        if pod.is_none() && ip.is_none() {
            return Err(format!("`workers[{index}]` names neither `pod` nor `ip`"));
        }
        let busy = match entry.get("busy") {
            Some(Value::Bool(busy)) => *busy,
            None | Some(Value::Null) => {
                return Err(format!("`workers[{index}].busy` is missing (or null)"));
            }
            Some(other) => {
                return Err(format!(
                    "`workers[{index}].busy` must be a boolean, not {}",
                    json_type(other)
                ));
            }
        };
        reports.push(ConsumerReport {
            pod,
            ip,
            busy,
            channel: None,
        });
    }
    Ok(Some(reports))
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl ProviderUri for HttpUri {
    const SPEC: ProviderSpec = ProviderSpec {
        name: "http",
        aliases: &[],
        schemes: &["http+json", "https+json"],
        default_interval: Duration::from_secs(1),
        interval_flag: "--http-poll-interval",
        example: "https+json://metrics.example/queues/emails",
    };

    fn parse(input: &str, scheme: &str) -> Result<Self, String> {
        uri::parse(input, scheme)
    }

    fn redacted(&self) -> String {
        HttpUri::redacted(self)
    }

    /// The URL and the `Authorization` value must be usable.
    fn validate(&self, creds: &Credentials) -> Result<(), QueueError> {
        check_config(self, creds)
    }

    fn connect<'a>(
        &'a self,
        creds: &'a Credentials,
        opts: &'a ProviderOptions,
    ) -> ConnectFuture<'a> {
        boxed(std::future::ready(HttpProvider::new(self, creds, opts)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<QueueMetrics, String> {
        parse_metrics(body.as_bytes(), jiff::Timestamp::UNIX_EPOCH)
    }

    #[test]
    fn full_and_minimal_bodies() {
        let m = parse(
            r#"{"visible": 12, "in_flight": 3, "delayed": null, "sent_per_minute": 40,
                "consumers": 2, "idle": false, "extra": "ignored"}"#,
        )
        .unwrap();
        assert_eq!(m.visible, 12);
        assert_eq!(m.in_flight, Some(3));
        assert_eq!(m.delayed, None);
        assert_eq!(m.sent_per_minute, Some(40));
        assert_eq!(m.consumers, Some(2));
        assert_eq!(m.idle, Some(false));
        let m = parse(r#"{"visible": 0}"#).unwrap();
        assert_eq!((m.visible, m.in_flight, m.idle), (0, None, None));
    }

    #[test]
    fn schema_violations_name_the_field() {
        let cases = [
            ("", "not JSON"),
            ("[1]", "not a JSON object"),
            (r#"{"in_flight": 1}"#, "`visible` is missing"),
            (r#"{"visible": null}"#, "`visible` is missing"),
            (r#"{"visible": -1}"#, "`visible` is negative"),
            (r#"{"visible": 1.5}"#, "`visible` is not a whole number"),
            (r#"{"visible": 1e30}"#, "`visible` is too large"),
            (r#"{"visible": -1e30}"#, "`visible` is negative"),
            (
                r#"{"visible": "3"}"#,
                "`visible` must be a non-negative integer",
            ),
            (
                r#"{"visible": 1, "in_flight": -2}"#,
                "`in_flight` is negative",
            ),
            (
                r#"{"visible": 1, "consumers": true}"#,
                "`consumers` must be",
            ),
            (
                r#"{"visible": 1, "idle": "yes"}"#,
                "`idle` must be a boolean",
            ),
            (
                r#"{"visible": 18446744073709551616}"#,
                "`visible` is too large",
            ),
        ];
        for (body, expected) in cases {
            let err = parse(body).unwrap_err();
            assert!(err.contains(expected), "{body}: {err}");
        }
    }

    #[test]
    fn a_workers_list_is_read() {
        let m = parse(
            r#"{"visible": 0, "workers": [{"pod": "w-1", "busy": true},
                {"ip": "10.1.2.3", "busy": false}, {"pod": "w-3", "ip": "10.1.2.4", "busy": false}]}"#,
        )
        .unwrap();
        assert_eq!(
            m.workers,
            Some(vec![
                ConsumerReport {
                    pod: Some("w-1".into()),
                    ip: None,
                    busy: true,
                    channel: None,
                },
                ConsumerReport {
                    pod: None,
                    ip: Some("10.1.2.3".into()),
                    busy: false,
                    channel: None,
                },
                ConsumerReport {
                    pod: Some("w-3".into()),
                    ip: Some("10.1.2.4".into()),
                    busy: false,
                    channel: None,
                },
            ])
        );
        assert_eq!(
            parse(r#"{"visible": 0, "workers": null}"#).unwrap().workers,
            None
        );
        assert_eq!(
            parse(r#"{"visible": 0, "workers": []}"#).unwrap().workers,
            Some(Vec::new())
        );
    }

    #[test]
    fn a_bad_workers_list_names_the_entry() {
        let cases = [
            (
                r#"{"visible": 0, "workers": {}}"#,
                "`workers` must be a list",
            ),
            (
                r#"{"visible": 0, "workers": [1]}"#,
                "`workers[0]` must be an object",
            ),
            (
                r#"{"visible": 0, "workers": [{"busy": true}]}"#,
                "names neither",
            ),
            (
                r#"{"visible": 0, "workers": [{"pod": "a"}]}"#,
                "`workers[0].busy` is missing",
            ),
            (
                r#"{"visible": 0, "workers": [{"pod": "a", "busy": 1}]}"#,
                "must be a boolean",
            ),
            (
                r#"{"visible": 0, "workers": [{"pod": 7, "busy": true}]}"#,
                "`workers[0].pod` must be a string",
            ),
            (
                r#"{"visible": 0, "workers": [{"pod": "", "busy": true}]}"#,
                "1 to 253",
            ),
        ];
        for (body, expected) in cases {
            let err = parse(body).unwrap_err();
            assert!(err.contains(expected), "{body}: {err}");
        }
        let many = format!(
            r#"{{"visible": 0, "workers": [{}]}}"#,
            vec![r#"{"pod": "a", "busy": true}"#; MAX_WORKERS + 1].join(",")
        );
        assert!(parse(&many).unwrap_err().contains("at most"));
    }
}
