//! Celery remote-control messages as kombu's pidbox writes and reads them. Pure.
//!
//! Checked against Celery 5.7.0 / kombu 5.7.0 (`celery control cancel_consumer` captured
//! on Redis; kombu's `pidbox.Mailbox` read for AMQP, where the same body travels as the
//! message body itself): the command body is
//! `{"method", "arguments", "destination": [node names], "pattern": null, "matcher": null}`
//! plus `ticket` and `reply_to: {exchange: "reply.celery.pidbox", routing_key: <oid>}` when
//! a reply is wanted. The worker runs it only when its node name is in `destination`
//! (kombu `pidbox.Node.handle_message`), and drops it once the `expires` header (seconds
//! since the epoch) has passed. A reply is `{"<node name>": <result>}` with header `ticket`.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};

use base64::Engine as _;
use serde_json::{Value, json};

/// The fanout exchange every worker's pidbox queue is bound to (`<app namespace>.pidbox`;
/// Celery's namespace is `celery`).
pub const MAILBOX_EXCHANGE: &str = "celery.pidbox";
/// The direct exchange replies are published to, routed by the asker's id.
pub const REPLY_EXCHANGE: &str = "reply.celery.pidbox";
/// How kombu labels a JSON body (its `json` serializer); a worker accepts only the content
/// types in its `accept_content`, which is `json` by default.
pub const CONTENT_TYPE: &str = "application/json";
pub const CONTENT_ENCODING: &str = "utf-8";

/// A remote-control command the drain sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Stop consuming from a queue (the worker finishes what it holds).
    CancelConsumer(String),
    /// Consume from a queue again.
    AddConsumer(String),
    /// The queues the worker consumes from now.
    ActiveQueues,
    /// The tasks the worker executes now.
    Active,
    /// The tasks it has received and not started (prefetched, early-acked or not).
    Reserved,
}

impl Command {
    pub fn method(&self) -> &'static str {
        match self {
            Command::CancelConsumer(_) => "cancel_consumer",
            Command::AddConsumer(_) => "add_consumer",
            Command::ActiveQueues => "active_queues",
            Command::Active => "active",
            Command::Reserved => "reserved",
        }
    }

    fn arguments(&self) -> Value {
        match self {
            Command::CancelConsumer(queue) | Command::AddConsumer(queue) => {
                json!({ "queue": queue })
            }
            Command::ActiveQueues | Command::Active | Command::Reserved => json!({}),
        }
    }
}

/// Where replies to a command go: our id (the reply routing key) and the command's ticket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyTo {
    pub oid: String,
    pub ticket: String,
}

/// The command body: what the worker's pidbox dispatches.
pub fn command_body(command: &Command, destination: &[String], reply: Option<&ReplyTo>) -> Value {
    let mut body = json!({
        "method": command.method(),
        "arguments": command.arguments(),
        "destination": destination,
        "pattern": null,
        "matcher": null,
    });
    if let (Some(reply), Some(map)) = (reply, body.as_object_mut()) {
        map.insert("ticket".into(), json!(reply.ticket));
        map.insert(
            "reply_to".into(),
            json!({ "exchange": REPLY_EXCHANGE, "routing_key": reply.oid }),
        );
    }
    body
}

/// kombu's Redis envelope around `body` (what its virtual transport PUBLISHes on a fanout
/// exchange): the JSON body base64-encoded, `expires` in the headers.
pub fn redis_envelope(body: &Value, expires_at: f64, delivery_tag: &str) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(body.to_string());
    json!({
        "body": encoded,
        "content-encoding": CONTENT_ENCODING,
        "content-type": CONTENT_TYPE,
        "headers": { "clock": 1, "expires": expires_at },
        "properties": {
            "delivery_mode": 2,
            "delivery_info": { "exchange": MAILBOX_EXCHANGE, "routing_key": "" },
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": delivery_tag,
        },
    })
    .to_string()
}

/// One worker's reply to a command.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub ticket: String,
    pub node: String,
    pub result: Value,
}

/// Why a reply cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    #[error("not JSON: {0}")]
    Json(String),
    #[error("kombu envelope: {0}")]
    Envelope(String),
    #[error("not a reply: {0}")]
    Body(String),
}

/// Reads a reply as kombu's Redis transport LPUSHes it (the envelope, base64 body).
pub fn parse_redis_reply(payload: &[u8]) -> Result<Reply, ReplyError> {
    let envelope: Value =
        serde_json::from_slice(payload).map_err(|e| ReplyError::Json(e.to_string()))?;
    let body = envelope
        .get("body")
        .and_then(Value::as_str)
        .ok_or_else(|| ReplyError::Envelope("no string `body`".into()))?;
    let encoding = envelope
        .pointer("/properties/body_encoding")
        .and_then(Value::as_str);
    let body = match encoding {
        Some("base64") => base64::engine::general_purpose::STANDARD
            .decode(body)
            .map_err(|e| ReplyError::Envelope(format!("body is not base64: {e}")))?,
        None => body.as_bytes().to_vec(),
        Some(other) => {
            return Err(ReplyError::Envelope(format!(
                "body encoding `{other}` is not supported"
            )));
        }
    };
    let ticket = envelope
        .pointer("/headers/ticket")
        .and_then(Value::as_str)
        .unwrap_or_default();
    parse_reply_body(&body, ticket)
}

/// Reads a reply body, `{"<node name>": <result>}`, received with `ticket`.
pub fn parse_reply_body(body: &[u8], ticket: &str) -> Result<Reply, ReplyError> {
    let body: Value = serde_json::from_slice(body).map_err(|e| ReplyError::Json(e.to_string()))?;
    let map = body
        .as_object()
        .filter(|m| m.len() == 1)
        .ok_or_else(|| ReplyError::Body("expected one node name and its result".into()))?;
    let (node, result) = map
        .iter()
        .next()
        .ok_or_else(|| ReplyError::Body("empty".into()))?;
    Ok(Reply {
        ticket: ticket.to_string(),
        node: node.clone(),
        result: result.clone(),
    })
}

/// Keeps `parsed` in `replies` when it answers one of our `tickets` (by index) from one
/// of the `destination` nodes; anything else (another asker's reply, a node not asked, an
/// unreadable payload) is left out.
pub fn collect_reply<E: std::fmt::Display>(
    parsed: Result<Reply, E>,
    tickets: &[String],
    destination: &[String],
    replies: &mut Vec<(usize, Reply)>,
) {
    match parsed {
        Ok(reply) => {
            if let Some(index) = tickets.iter().position(|t| *t == reply.ticket)
                && destination.contains(&reply.node)
            {
                replies.push((index, reply));
            }
        }
        Err(e) => tracing::debug!(error = %e, "ignoring an unreadable pidbox reply"),
    }
}

/// A random UUID-shaped id (tickets, our reply id, delivery tags): only uniqueness
/// matters to kombu.
pub fn random_id() -> String {
    let half = || RandomState::new().build_hasher().finish();
    let (a, b) = (half(), half());
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0x0fff,
        (b >> 48) | 0x8000,
        b & 0xffff_ffff_ffff
    )
}

#[cfg(test)]
#[path = "envelope_tests.rs"]
mod tests;
