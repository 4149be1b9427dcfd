//! Celery worker events as they arrive: kombu's Redis envelope, an AMQP body, and the event
//! JSON inside both. Pure functions; any input gives a [`WorkerBeat`] or a [`ParseError`]
//! that says what is wrong, never a panic.
//!
//! Fields that scaling depends on (`hostname`, `active`, `processed`) must be present:
//! a heartbeat without `active` must not read as an idle worker. `freq` defaults to 2.0 and
//! `timestamp` is optional, as in Celery's own event receiver.

use base64::Engine as _;
use serde_json::{Map, Value};

use super::{BeatKind, WorkerBeat};

/// Larger payloads are refused before parsing. A real event is about 300 bytes (700 in
/// the Redis envelope); anything near this is not a worker event.
pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024;

/// Celery's default heartbeat interval, used when an event does not carry `freq`.
pub const DEFAULT_FREQ: f64 = 2.0;

/// Why a payload is not a worker event we can use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("the payload is {0} bytes; at most {MAX_PAYLOAD_BYTES} are accepted")]
    TooLarge(usize),
    #[error("not JSON: {0}")]
    Json(String),
    #[error("kombu envelope: {0}")]
    Envelope(String),
    #[error("the envelope body is not valid base64: {0}")]
    Base64(String),
    #[error("body encoding `{0}` is not supported (expected base64)")]
    BodyEncoding(String),
    #[error("content type `{0}` is not supported (set Celery's event_serializer to json)")]
    ContentType(String),
    #[error("content encoding `{0}` is not supported (expected utf-8)")]
    ContentEncoding(String),
    #[error("not a worker event (type `{0}`)")]
    NotWorkerEvent(String),
    #[error("field `{field}`: {problem}")]
    Field {
        field: &'static str,
        problem: String,
    },
}

/// Parses what kombu PUBLISHes on a Redis `.../celeryev/worker.*` channel: a JSON
/// envelope whose `body` holds the event, base64-encoded (`properties.body_encoding`).
pub fn parse_redis_message(payload: &[u8]) -> Result<WorkerBeat, ParseError> {
    let envelope = json_object(payload)?;
    let content_type = optional_str(&envelope, "content-type", ParseError::Envelope)?;
    let content_encoding = optional_str(&envelope, "content-encoding", ParseError::Envelope)?;
    check_content(content_type, content_encoding)?;
    let body = match envelope.get("body") {
        Some(Value::String(body)) => body,
        Some(_) => return Err(ParseError::Envelope("`body` is not a string".into())),
        None => return Err(ParseError::Envelope("no `body`".into())),
    };
    let body_encoding = match envelope.get("properties") {
        None | Some(Value::Null) => None,
        Some(Value::Object(properties)) => {
            optional_str(properties, "body_encoding", ParseError::Envelope)?
        }
        Some(_) => return Err(ParseError::Envelope("`properties` is not an object".into())),
    };
    match body_encoding {
        Some("base64") => {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(body.trim())
                .map_err(|e| ParseError::Base64(e.to_string()))?;
            parse_event(&decoded)
        }
        // kombu leaves a body it did not encode as it is.
        None => parse_event(body.as_bytes()),
        Some(other) => Err(ParseError::BodyEncoding(bounded(other))),
    }
}

/// Parses an AMQP message from the `celeryev` exchange: the body is the event JSON; the
/// content type and encoding are the message properties (absent means JSON / UTF-8).
pub fn parse_amqp_message(
    body: &[u8],
    content_type: Option<&str>,
    content_encoding: Option<&str>,
) -> Result<WorkerBeat, ParseError> {
    check_content(content_type, content_encoding)?;
    parse_event(body)
}

/// Parses the event JSON itself (`{"type": "worker-heartbeat", "hostname": ..., ...}`).
pub fn parse_event(json: &[u8]) -> Result<WorkerBeat, ParseError> {
    let event = json_object(json)?;
    let kind = match event.get("type") {
        Some(Value::String(t)) => match t.as_str() {
            "worker-heartbeat" => BeatKind::Heartbeat,
            "worker-online" => BeatKind::Online,
            "worker-offline" => BeatKind::Offline,
            other => return Err(ParseError::NotWorkerEvent(bounded(other))),
        },
        Some(_) => return Err(field("type", "not a string")),
        None => return Err(field("type", "missing")),
    };
    let hostname = match event.get("hostname") {
        Some(Value::String(h)) if h.is_empty() => return Err(field("hostname", "empty")),
        Some(Value::String(h)) => h.clone(),
        Some(_) => return Err(field("hostname", "not a string")),
        None => return Err(field("hostname", "missing")),
    };
    let active = whole_number(&event, "active")?;
    let active =
        u32::try_from(active).map_err(|_| field("active", format!("{active} is out of range")))?;
    let processed = whole_number(&event, "processed")?;
    let freq = match event.get("freq") {
        None | Some(Value::Null) => DEFAULT_FREQ,
        Some(v) => match v.as_f64() {
            Some(f) if f.is_finite() && f > 0.0 => f,
            _ => {
                return Err(field(
                    "freq",
                    format!("{} is not a positive number", bounded_value(v)),
                ));
            }
        },
    };
    let sent_at = match event.get("timestamp") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_f64() {
            Some(t) if t.is_finite() => Some(t),
            _ => return Err(field("timestamp", "not a number")),
        },
    };
    Ok(WorkerBeat {
        hostname,
        kind,
        active,
        processed,
        freq,
        sent_at,
    })
}

fn json_object(bytes: &[u8]) -> Result<Map<String, Value>, ParseError> {
    if bytes.len() > MAX_PAYLOAD_BYTES {
        return Err(ParseError::TooLarge(bytes.len()));
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ParseError::Json("not a JSON object".into())),
        Err(e) => Err(ParseError::Json(e.to_string())),
    }
}

/// Only JSON in UTF-8 can be read; Celery's `event_serializer` may choose otherwise.
fn check_content(
    content_type: Option<&str>,
    content_encoding: Option<&str>,
) -> Result<(), ParseError> {
    if let Some(ct) = content_type
        && !ct.eq_ignore_ascii_case("application/json")
    {
        return Err(ParseError::ContentType(bounded(ct)));
    }
    if let Some(ce) = content_encoding
        && !ce.eq_ignore_ascii_case("utf-8")
        && !ce.eq_ignore_ascii_case("utf8")
    {
        return Err(ParseError::ContentEncoding(bounded(ce)));
    }
    Ok(())
}

fn optional_str<'a>(
    map: &'a Map<String, Value>,
    key: &str,
    err: fn(String) -> ParseError,
) -> Result<Option<&'a str>, ParseError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(err(format!("`{key}` is not a string"))),
    }
}

/// A required count: a JSON integer >= 0 that fits in 64 bits.
fn whole_number(event: &Map<String, Value>, name: &'static str) -> Result<u64, ParseError> {
    match event.get(name) {
        Some(v) => v.as_u64().ok_or_else(|| {
            field(
                name,
                format!("{} is not a whole number >= 0", bounded_value(v)),
            )
        }),
        None => Err(field(name, "missing")),
    }
}

fn field(field: &'static str, problem: impl Into<String>) -> ParseError {
    ParseError::Field {
        field,
        problem: problem.into(),
    }
}

/// Error messages quote at most this much of the input.
const MAX_QUOTED: usize = 80;

fn bounded(s: &str) -> String {
    if s.len() <= MAX_QUOTED {
        return s.to_string();
    }
    let mut end = MAX_QUOTED;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

fn bounded_value(v: &Value) -> String {
    bounded(&v.to_string())
}

#[cfg(test)]
mod tests;
