use base64::Engine as _;

use super::*;

// Captured from real Celery 5.7.0 workers (kombu 5.7.0): `redis-cli psubscribe '*'` for
// Redis (db 3; db 0 with global_keyprefix `wpa:`), a queue bound to `celeryev` with
// `worker.#` read through the management API for RabbitMQ.
const REDIS_ONLINE: &str = include_str!("../../../tests/celery/events/redis_db3_online.json");
const REDIS_OFFLINE: &str = include_str!("../../../tests/celery/events/redis_db3_offline.json");
const REDIS_HEARTBEAT_BUSY: &str =
    include_str!("../../../tests/celery/events/redis_prefix_heartbeat_active1.json");
const AMQP_HEARTBEAT_BUSY: &str =
    include_str!("../../../tests/celery/events/amqp_heartbeat_active1.json");
const AMQP_OFFLINE: &str = include_str!("../../../tests/celery/events/amqp_offline.json");

fn event(json: &str) -> Result<WorkerBeat, ParseError> {
    parse_event(json.as_bytes())
}

/// A Redis envelope the way kombu writes it, around `body`.
fn envelope(body: &str) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(body);
    serde_json::json!({
        "body": encoded,
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {"hostname": "celery@x"},
        "properties": {"delivery_mode": 1, "body_encoding": "base64"},
    })
    .to_string()
}

fn assert_close(sent_at: Option<f64>, expected: f64) {
    let got = sent_at.expect("a timestamp");
    assert!((got - expected).abs() < 1e-5, "{got} vs {expected}");
}

fn field_error(result: Result<WorkerBeat, ParseError>) -> &'static str {
    match result {
        Err(ParseError::Field { field, .. }) => field,
        other => panic!("expected a field error, got {other:?}"),
    }
}

#[test]
fn real_redis_online_event() {
    let beat = parse_redis_message(REDIS_ONLINE.as_bytes()).unwrap();
    // serde_json reads floats to within an ulp or so, not digit for digit.
    assert_close(beat.sent_at, 1796300317.8712785);
    assert_eq!(
        beat,
        WorkerBeat {
            hostname: "celery@wpa-cap-1".into(),
            kind: BeatKind::Online,
            active: 0,
            processed: 0,
            freq: 2.0,
            sent_at: beat.sent_at,
        }
    );
}

#[test]
fn real_redis_offline_event() {
    let beat = parse_redis_message(REDIS_OFFLINE.as_bytes()).unwrap();
    assert_eq!(beat.kind, BeatKind::Offline);
    assert_eq!(beat.hostname, "celery@wpa-cap-1");
}

#[test]
fn real_redis_heartbeat_of_a_busy_worker() {
    let beat = parse_redis_message(REDIS_HEARTBEAT_BUSY.as_bytes()).unwrap();
    assert_eq!(beat.kind, BeatKind::Heartbeat);
    assert_eq!(beat.hostname, "celery@wpa-cap-2");
    assert_eq!((beat.active, beat.processed), (1, 1));
}

#[test]
fn real_amqp_events() {
    let busy = parse_amqp_message(
        AMQP_HEARTBEAT_BUSY.as_bytes(),
        Some("application/json"),
        Some("utf-8"),
    )
    .unwrap();
    assert_close(busy.sent_at, 1796300362.546121);
    assert_eq!(
        busy,
        WorkerBeat {
            hostname: "celery@wpa-cap-3".into(),
            kind: BeatKind::Heartbeat,
            active: 1,
            processed: 1,
            freq: 2.0,
            sent_at: busy.sent_at,
        }
    );
    let offline = parse_amqp_message(AMQP_OFFLINE.as_bytes(), None, None).unwrap();
    assert_eq!((offline.kind, offline.active), (BeatKind::Offline, 0));
}

#[test]
fn the_redis_envelope_is_not_the_event() {
    // An AMQP body on the Redis path (no envelope) has no `body`.
    assert!(matches!(
        parse_redis_message(AMQP_OFFLINE.as_bytes()),
        Err(ParseError::Envelope(_))
    ));
    // And the envelope is not an event.
    assert!(matches!(
        parse_amqp_message(REDIS_ONLINE.as_bytes(), None, None),
        Err(ParseError::Field { field: "type", .. })
    ));
}

/// An input and a check of the error it gives.
type Case = (&'static str, fn(&ParseError) -> bool);

#[test]
fn envelope_problems_are_named() {
    let cases: &[Case] = &[
        (r#"{"body": 5}"#, |e| matches!(e, ParseError::Envelope(_))),
        (r#"{"properties": {}}"#, |e| {
            matches!(e, ParseError::Envelope(_))
        }),
        (r#"{"body": "x", "properties": []}"#, |e| {
            matches!(e, ParseError::Envelope(_))
        }),
        (
            r#"{"body": "!!!not base64", "properties": {"body_encoding": "base64"}}"#,
            |e| matches!(e, ParseError::Base64(_)),
        ),
        (
            r#"{"body": "x", "properties": {"body_encoding": "rot13"}}"#,
            |e| matches!(e, ParseError::BodyEncoding(s) if s == "rot13"),
        ),
        (
            r#"{"body": "x", "content-type": "application/x-python-serialize"}"#,
            |e| matches!(e, ParseError::ContentType(_)),
        ),
        (r#"{"body": "x", "content-encoding": "binary"}"#, |e| {
            matches!(e, ParseError::ContentEncoding(_))
        }),
        (r#"{"body": "x", "content-type": 7}"#, |e| {
            matches!(e, ParseError::Envelope(_))
        }),
    ];
    for (input, expected) in cases {
        let error = parse_redis_message(input.as_bytes()).unwrap_err();
        assert!(expected(&error), "{input}: {error}");
    }
}

#[test]
fn a_body_without_encoding_is_read_as_it_is() {
    let json = r#"{"body": "{\"type\": \"worker-online\", \"hostname\": \"h\", \"active\": 0, \"processed\": 0}"}"#;
    let beat = parse_redis_message(json.as_bytes()).unwrap();
    assert_eq!((beat.kind, beat.hostname.as_str()), (BeatKind::Online, "h"));
}

#[test]
fn other_amqp_content_types_are_refused() {
    let error = parse_amqp_message(AMQP_OFFLINE.as_bytes(), Some("application/x-msgpack"), None)
        .unwrap_err();
    assert_eq!(
        error,
        ParseError::ContentType("application/x-msgpack".into())
    );
    assert!(error.to_string().contains("event_serializer"));
}

#[test]
fn garbage_is_an_error_not_a_panic() {
    let inputs: &[&[u8]] = &[
        b"",
        b"\xff\xfe\x00",
        b"null",
        b"[]",
        b"\"worker-heartbeat\"",
        b"{",
        b"{\"type\": \"worker-heartbeat\"",
        b"{}}",
        &[b'['; 10_000],
    ];
    for input in inputs {
        assert!(parse_event(input).is_err(), "{input:?}");
        assert!(parse_redis_message(input).is_err(), "{input:?}");
        assert!(parse_amqp_message(input, None, None).is_err(), "{input:?}");
    }
}

#[test]
fn oversized_payloads_are_refused_before_parsing() {
    let big = vec![b' '; MAX_PAYLOAD_BYTES + 1];
    assert_eq!(
        parse_event(&big),
        Err(ParseError::TooLarge(MAX_PAYLOAD_BYTES + 1))
    );
}

#[test]
fn missing_fields_are_named() {
    let full = r#"{"type": "worker-heartbeat", "hostname": "h", "active": 1, "processed": 2}"#;
    assert!(event(full).is_ok());
    for name in ["type", "hostname", "active", "processed"] {
        let mut map: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(full).unwrap();
        map.remove(name);
        let json = serde_json::Value::Object(map).to_string();
        assert_eq!(field_error(event(&json)), name, "{json}");
    }
}

#[test]
fn optional_fields_take_celerys_defaults() {
    let beat =
        event(r#"{"type": "worker-heartbeat", "hostname": "h", "active": 0, "processed": 0, "freq": null}"#)
            .unwrap();
    assert_eq!(beat.freq, DEFAULT_FREQ);
    assert_eq!(beat.sent_at, None);
}

#[test]
fn wrong_field_types_are_named() {
    let cases = [
        (
            r#"{"type": 1, "hostname": "h", "active": 0, "processed": 0}"#,
            "type",
        ),
        (
            r#"{"type": "worker-online", "hostname": 3, "active": 0, "processed": 0}"#,
            "hostname",
        ),
        (
            r#"{"type": "worker-online", "hostname": "", "active": 0, "processed": 0}"#,
            "hostname",
        ),
        (
            r#"{"type": "worker-online", "hostname": "h", "active": "1", "processed": 0}"#,
            "active",
        ),
        (
            r#"{"type": "worker-online", "hostname": "h", "active": -1, "processed": 0}"#,
            "active",
        ),
        (
            r#"{"type": "worker-online", "hostname": "h", "active": 1.5, "processed": 0}"#,
            "active",
        ),
        (
            r#"{"type": "worker-online", "hostname": "h", "active": 0, "processed": null}"#,
            "processed",
        ),
        (
            r#"{"type": "worker-online", "hostname": "h", "active": 0, "processed": 0, "freq": 0}"#,
            "freq",
        ),
        (
            r#"{"type": "worker-online", "hostname": "h", "active": 0, "processed": 0, "freq": "2"}"#,
            "freq",
        ),
        (
            r#"{"type": "worker-online", "hostname": "h", "active": 0, "processed": 0, "timestamp": "now"}"#,
            "timestamp",
        ),
    ];
    for (json, name) in cases {
        assert_eq!(field_error(event(json)), name, "{json}");
    }
}

#[test]
fn huge_numbers_are_errors_not_wraparounds() {
    let active_over_u32 =
        r#"{"type": "worker-heartbeat", "hostname": "h", "active": 4294967296, "processed": 0}"#;
    assert_eq!(field_error(event(active_over_u32)), "active");
    let at_u32 = r#"{"type": "worker-heartbeat", "hostname": "h", "active": 4294967295, "processed": 18446744073709551615}"#;
    let beat = event(at_u32).unwrap();
    assert_eq!((beat.active, beat.processed), (u32::MAX, u64::MAX));
    let processed_over_u64 = r#"{"type": "worker-heartbeat", "hostname": "h", "active": 0, "processed": 18446744073709551616}"#;
    assert_eq!(field_error(event(processed_over_u64)), "processed");
    // Beyond f64: serde_json refuses the number itself.
    let beyond_f64 = r#"{"type": "worker-heartbeat", "hostname": "h", "active": 0, "processed": 0, "timestamp": 1e400}"#;
    assert!(matches!(event(beyond_f64), Err(ParseError::Json(_))));
    let huge_freq = r#"{"type": "worker-heartbeat", "hostname": "h", "active": 0, "processed": 0, "freq": 1e300}"#;
    assert_eq!(event(huge_freq).unwrap().freq, 1e300);
}

#[test]
fn other_event_types_are_not_worker_events() {
    for t in ["task-received", "worker-unknown", ""] {
        let json = format!(r#"{{"type": "{t}", "hostname": "h", "active": 0, "processed": 0}}"#);
        assert_eq!(event(&json), Err(ParseError::NotWorkerEvent(t.into())));
    }
    let long = "x".repeat(1000);
    let json = format!(r#"{{"type": "{long}"}}"#);
    let error = event(&json).unwrap_err().to_string();
    assert!(error.len() < 200, "{error}");
}

#[test]
fn enveloped_events_round_trip() {
    let beat = parse_redis_message(
        envelope(r#"{"type": "worker-heartbeat", "hostname": "celery@a", "active": 3, "processed": 9, "freq": 5.0, "timestamp": 12.5}"#)
            .as_bytes(),
    )
    .unwrap();
    assert_eq!(
        beat,
        WorkerBeat {
            hostname: "celery@a".into(),
            kind: BeatKind::Heartbeat,
            active: 3,
            processed: 9,
            freq: 5.0,
            sent_at: Some(12.5),
        }
    );
    // The event inside the envelope is checked like any other.
    assert!(matches!(
        parse_redis_message(envelope("not json").as_bytes()),
        Err(ParseError::Json(_))
    ));
}
