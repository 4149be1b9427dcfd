use base64::Engine as _;
use serde_json::{Value, json};

use super::*;

/// What `celery -A app control cancel_consumer drainq1 -d celery@probe1` PUBLISHed on
/// `/0.celery.pidbox` (Celery 5.7.0, kombu 5.7.0, Redis DB 0).
const CAPTURED_CANCEL: &str = r#"{"body": "eyJtZXRob2QiOiAiY2FuY2VsX2NvbnN1bWVyIiwgImFyZ3VtZW50cyI6IHsicXVldWUiOiAiZHJhaW5xMSJ9LCAiZGVzdGluYXRpb24iOiBbImNlbGVyeUBwcm9iZTEiXSwgInBhdHRlcm4iOiBudWxsLCAibWF0Y2hlciI6IG51bGwsICJ0aWNrZXQiOiAiOTkwNjAzZDItODI4NC00YjJkLWFjN2ItMDY1ZjkxYjY3ZmE5IiwgInJlcGx5X3RvIjogeyJleGNoYW5nZSI6ICJyZXBseS5jZWxlcnkucGlkYm94IiwgInJvdXRpbmdfa2V5IjogIjg0OGVhYTU2LTZkODgtM2NkYi1hOTUzLWEwZDQ4NWNhMmEyOSJ9fQ==", "content-encoding": "utf-8", "content-type": "application/json", "headers": {"clock": 1, "expires": 1796663837.9287863}, "properties": {"delivery_mode": 2, "delivery_info": {"exchange": "celery.pidbox", "routing_key": ""}, "priority": 0, "body_encoding": "base64", "delivery_tag": "23c212da-9fa2-452c-ba02-60bd0801683b"}}"#;

fn decoded_body(envelope: &Value) -> Value {
    let body = envelope["body"].as_str().expect("body");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(body)
        .expect("base64");
    serde_json::from_slice(&bytes).expect("json body")
}

#[test]
fn drain_cancel_envelope_matches_what_celery_publishes() {
    let captured: Value = serde_json::from_str(CAPTURED_CANCEL).expect("captured");
    let reply = ReplyTo {
        oid: "848eaa56-6d88-3cdb-a953-a0d485ca2a29".into(),
        ticket: "990603d2-8284-4b2d-ac7b-065f91b67fa9".into(),
    };
    let body = command_body(
        &Command::CancelConsumer("drainq1".into()),
        &["celery@probe1".to_string()],
        Some(&reply),
    );
    assert_eq!(body, decoded_body(&captured));
    let ours: Value = serde_json::from_str(&redis_envelope(
        &body,
        1_796_663_837.928_786_3,
        "23c212da-9fa2-452c-ba02-60bd0801683b",
    ))
    .expect("ours");
    // Same envelope, field for field (the body compared decoded: key order may differ).
    for field in ["content-encoding", "content-type", "headers", "properties"] {
        assert_eq!(ours[field], captured[field], "{field}");
    }
    assert_eq!(decoded_body(&ours), decoded_body(&captured));
}

#[test]
fn drain_commands_without_reply_carry_no_ticket() {
    let body = command_body(
        &Command::AddConsumer("q".into()),
        &["celery@a".to_string(), "celery@b".to_string()],
        None,
    );
    assert_eq!(
        body,
        json!({
            "method": "add_consumer",
            "arguments": {"queue": "q"},
            "destination": ["celery@a", "celery@b"],
            "pattern": null,
            "matcher": null,
        })
    );
    for (command, method) in [
        (Command::ActiveQueues, "active_queues"),
        (Command::Active, "active"),
        (Command::Reserved, "reserved"),
    ] {
        let body = command_body(&command, &[], None);
        assert_eq!(body["method"], method);
        assert_eq!(body["arguments"], json!({}));
    }
}

#[test]
fn drain_replies_are_read_from_kombus_envelope() {
    let body = base64::engine::general_purpose::STANDARD
        .encode(r#"{"celery@edx.lms.core.default.worker-0": [{"id": "t1"}]}"#);
    let payload = json!({
        "body": body,
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {"ticket": "tk"},
        "properties": {"body_encoding": "base64", "delivery_tag": "x"},
    })
    .to_string();
    let reply = parse_redis_reply(payload.as_bytes()).expect("reply");
    assert_eq!(reply.ticket, "tk");
    assert_eq!(reply.node, "celery@edx.lms.core.default.worker-0");
    assert_eq!(reply.result, json!([{"id": "t1"}]));
    assert!(matches!(
        parse_redis_reply(b"not json"),
        Err(ReplyError::Json(_))
    ));
    assert!(matches!(
        parse_reply_body(br#"{"a": 1, "b": 2}"#, "t"),
        Err(ReplyError::Body(_))
    ));
    let odd = json!({"body": "x", "properties": {"body_encoding": "zlib"}}).to_string();
    assert!(matches!(
        parse_redis_reply(odd.as_bytes()),
        Err(ReplyError::Envelope(_))
    ));
}

#[test]
fn drain_ids_are_unique_and_uuid_shaped() {
    let a = random_id();
    let b = random_id();
    assert_ne!(a, b);
    let parts: Vec<usize> = a.split('-').map(str::len).collect();
    assert_eq!(parts, vec![8, 4, 4, 4, 12], "{a}");
}
