//! Unit tests of the RabbitMQ provider: the management API objects and how AMQP and the
//! management API answers are joined.

use super::*;

#[test]
fn parses_sampled_and_unsampled_queue_objects() {
    let sampled: QueueInfo = serde_json::from_str(
        r#"{"name":"q","messages_ready":4,"messages_unacknowledged":2,"consumers":1,
            "message_stats":{"publish":6,"publish_details":{"rate":0.5}},"arguments":{}}"#,
    )
    .unwrap();
    assert_eq!(sampled.messages_ready, Some(4));
    assert_eq!(sampled.messages_unacknowledged, Some(2));
    assert_eq!(
        per_minute(
            sampled
                .message_stats
                .and_then(|s| s.publish_details)
                .and_then(|d| d.rate)
        ),
        Some(30)
    );
    let fresh: QueueInfo =
        serde_json::from_str(r#"{"name":"q","arguments":{},"type":"classic"}"#).unwrap();
    assert_eq!(
        (fresh.messages_ready, fresh.messages_unacknowledged),
        (None, None)
    );
    assert!(fresh.message_stats.is_none());
}

#[test]
fn odd_json_is_an_error_not_a_panic() {
    assert!(serde_json::from_str::<QueueInfo>(r#"{"messages_ready":-1}"#).is_err());
    assert!(serde_json::from_str::<QueueInfo>(r#"{"messages_ready":"many"}"#).is_err());
    assert!(serde_json::from_str::<QueueInfo>("[]").is_err());
    assert_eq!(per_minute(Some(f64::NAN)), None);
    assert_eq!(per_minute(Some(-1.0)), None);
    assert_eq!(per_minute(None), None);
}

fn info(json: &str) -> QueueInfo {
    serde_json::from_str(json).unwrap()
}

fn down() -> QueueError {
    QueueError::Unavailable {
        queue: "q".into(),
        detail: "refused".into(),
    }
}

const LAGGING: &str = r#"{"messages_ready":0,"messages_unacknowledged":2,"consumers":1,
    "message_stats":{"publish_details":{"rate":1.0}}}"#;

#[test]
fn ready_comes_from_amqp_even_when_the_sample_says_zero() {
    let amqp = AmqpCounts {
        ready: 7,
        consumers: 2,
    };
    let m = combine(Ok(amqp), Ok(info(LAGGING)), 0).unwrap();
    assert_eq!(
        (m.visible, m.in_flight, m.consumers, m.sent_per_minute),
        (7, Some(2), Some(2), Some(60))
    );
    assert_eq!(m.partial, None);
}

#[test]
fn messages_that_left_the_ready_state_since_the_sample_count_as_in_flight() {
    // The sample still shows 3 ready, none unacknowledged; AMQP shows none ready now: a
    // consumer took them, and the sample cannot yet tell whether it acked them.
    let amqp = AmqpCounts {
        ready: 0,
        consumers: 1,
    };
    let sample = r#"{"messages_ready":3,"messages_unacknowledged":0,"consumers":1}"#;
    let m = combine(Ok(amqp), Ok(info(sample)), 0).unwrap();
    assert_eq!((m.visible, m.in_flight), (0, Some(3)));
    // Once the sample catches up it is taken as it is.
    let amqp = AmqpCounts {
        ready: 0,
        consumers: 1,
    };
    let caught_up = r#"{"messages_ready":0,"messages_unacknowledged":3,"consumers":1}"#;
    let m = combine(Ok(amqp), Ok(info(caught_up)), 0).unwrap();
    assert_eq!((m.visible, m.in_flight), (0, Some(3)));
}

#[test]
fn messages_ready_moments_ago_count_as_in_flight_while_the_sample_may_predate_them() {
    // Published and taken by a consumer within one statistics interval: the sample never
    // showed them ready, but AMQP did, moments ago.
    let amqp = AmqpCounts {
        ready: 0,
        consumers: 1,
    };
    let never_saw_them = r#"{"messages_ready":0,"messages_unacknowledged":0,"consumers":1}"#;
    let m = combine(Ok(amqp), Ok(info(never_saw_them)), 3).unwrap();
    assert_eq!((m.visible, m.in_flight), (0, Some(3)));
}

#[test]
fn in_flight_is_not_counted_twice_once_the_sample_catches_up() {
    let amqp = AmqpCounts {
        ready: 0,
        consumers: 1,
    };
    let caught_up = r#"{"messages_ready":0,"messages_unacknowledged":3,"consumers":1}"#;
    let m = combine(Ok(amqp), Ok(info(caught_up)), 3).unwrap();
    assert_eq!(m.in_flight, Some(3));
    // Without a sample (new queue, or the management API down) the recent ready count
    // still says something may be in flight.
    let amqp = AmqpCounts {
        ready: 1,
        consumers: 1,
    };
    let m = combine(Ok(amqp), Ok(info(r#"{"name":"q"}"#)), 3).unwrap();
    assert_eq!(m.in_flight, Some(2));
    let amqp = AmqpCounts {
        ready: 1,
        consumers: 1,
    };
    let m = combine(Ok(amqp), Err(down()), 3).unwrap();
    assert_eq!(m.in_flight, Some(2));
}

#[test]
fn the_recent_ready_window_forgets_old_counts() {
    let mut recent: VecDeque<(Instant, u64)> = VecDeque::new();
    let start = Instant::now();
    let peak = |recent: &mut VecDeque<(Instant, u64)>, at: Instant, ready: u64| {
        remember(recent, ready, at)
    };
    assert_eq!(peak(&mut recent, start, 3), 3);
    assert_eq!(peak(&mut recent, start + Duration::from_secs(1), 0), 3);
    assert_eq!(
        peak(&mut recent, start + SAMPLE_LAG + Duration::from_secs(2), 0),
        0,
        "the 3 is older than the sample lag"
    );
}

#[test]
fn unsampled_queue_has_unknown_in_flight_and_says_so() {
    let amqp = AmqpCounts {
        ready: 1,
        consumers: 0,
    };
    let m = combine(Ok(amqp), Ok(info(r#"{"name":"q"}"#)), 0).unwrap();
    assert_eq!((m.visible, m.in_flight), (1, None));
    assert!(m.partial.unwrap().contains("no statistics sample"));
}

#[test]
fn either_source_alone_is_enough_and_the_gap_is_named() {
    let amqp = AmqpCounts {
        ready: 3,
        consumers: 1,
    };
    let m = combine(Ok(amqp), Err(down()), 0).unwrap();
    assert_eq!((m.visible, m.in_flight, m.sent_per_minute), (3, None, None));
    assert!(m.partial.unwrap().starts_with("management API unavailable"));

    let m = combine(Err(down()), Ok(info(LAGGING)), 0).unwrap();
    assert_eq!((m.visible, m.in_flight, m.consumers), (0, Some(2), Some(1)));
    assert!(m.partial.unwrap().starts_with("AMQP unavailable"));

    // Without AMQP and without a sample nothing tells the ready count.
    assert_eq!(combine(Err(down()), Ok(info("{}")), 0), Err(down()));
    assert_eq!(combine(Err(down()), Err(down()), 0), Err(down()));
}

#[test]
fn a_missing_queue_from_either_source_is_not_found() {
    let missing = || QueueError::NotFound { queue: "q".into() };
    let amqp = AmqpCounts {
        ready: 0,
        consumers: 0,
    };
    assert_eq!(
        combine(Err(missing()), Ok(info(LAGGING)), 0),
        Err(missing())
    );
    assert_eq!(combine(Err(down()), Err(missing()), 0), Err(missing()));
    // A vhost that does not exist: AMQP refuses it, the management API says 404.
    let refused = QueueError::Denied {
        queue: "q".into(),
        detail: "NOT_ALLOWED - vhost v not found".into(),
    };
    assert_eq!(
        combine(Err(refused.clone()), Err(missing()), 0),
        Err(refused)
    );
    // A management URL pointing elsewhere does not hide a queue AMQP can read.
    let m = combine(Ok(amqp), Err(missing()), 0).unwrap();
    assert!(m.partial.unwrap().starts_with("management API unavailable"));
}

#[test]
fn consumer_gaps_are_added_to_the_partial_note() {
    let amqp = AmqpCounts {
        ready: 1,
        consumers: 1,
    };
    let mut m = combine(Ok(amqp), Ok(info(r#"{"name":"q"}"#)), 0).unwrap();
    attach_reports(&mut m, Err("unreadable consumer_details".into()), Some(1));
    assert_eq!(m.workers, None);
    assert_eq!(
        m.partial.as_deref(),
        Some(
            "the management API has no statistics sample for this queue yet: \
             unacknowledged messages unknown; per-consumer reports unavailable: \
             unreadable consumer_details"
        )
    );
}

#[test]
fn consumer_details_do_not_decide_whether_the_queue_object_is_readable() {
    let odd = info(r#"{"messages_ready":0,"consumer_details":"garbage"}"#);
    assert_eq!(odd.consumer_details, Some(serde_json::json!("garbage")));
}

#[test]
fn vhost_is_one_path_segment() {
    assert_eq!(utf8_percent_encode("/", PATH_SEGMENT).to_string(), "%2F");
    assert_eq!(
        utf8_percent_encode("a b/c", PATH_SEGMENT).to_string(),
        "a%20b%2Fc"
    );
}
