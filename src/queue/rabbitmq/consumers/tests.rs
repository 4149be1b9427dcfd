//! Parsing and report rules, on answers captured from RabbitMQ 3.10.8 (management plugin):
//! a queue with two consumers on two connections, one holding an unacknowledged delivery
//! (channel `busy`), the other idle.

use super::*;

const QUEUE: &str = include_str!("../../../../tests/rabbitmq/management/queue_two_consumers.json");
const CHANNEL_BUSY: &str = include_str!("../../../../tests/rabbitmq/management/channel_busy.json");
const CHANNEL_IDLE: &str = include_str!("../../../../tests/rabbitmq/management/channel_idle.json");
const BUSY_CHANNEL: &str = "127.0.0.1:37718 -> 127.0.0.1:5672 (1)";
const IDLE_CHANNEL: &str = "127.0.0.1:37734 -> 127.0.0.1:5672 (1)";

fn details(queue_object: &str) -> serde_json::Value {
    let mut object: serde_json::Value = serde_json::from_str(queue_object).unwrap();
    object["consumer_details"].take()
}

fn listing(consumer_details: &str) -> Result<Listing, String> {
    let value: serde_json::Value = serde_json::from_str(consumer_details).unwrap();
    parse_listing(Some(&value))
}

fn listed(channel: &str, ip: &str) -> Listed {
    Listed {
        channel: channel.into(),
        ip: ip.into(),
    }
}

fn report(channel: &str, ip: &str, busy: bool) -> ConsumerReport {
    ConsumerReport {
        pod: None,
        ip: Some(ip.into()),
        busy,
        channel: Some(channel.into()),
    }
}

#[test]
fn captured_queue_object_lists_both_consumers_by_channel_and_peer() {
    let listing = parse_listing(Some(&details(QUEUE))).unwrap();
    assert_eq!(
        listing,
        Listing {
            consumers: vec![
                listed(BUSY_CHANNEL, "127.0.0.1"),
                listed(IDLE_CHANNEL, "127.0.0.1")
            ],
            total: 2,
            unidentified: 0,
        }
    );
    assert_eq!(channels_to_ask(&listing), [BUSY_CHANNEL, IDLE_CHANNEL]);
}

#[test]
fn captured_channel_objects_tell_unacknowledged_messages() {
    assert_eq!(
        channel_stats(CHANNEL_BUSY.as_bytes()),
        ChannelStats::Unacked(1)
    );
    assert_eq!(
        channel_stats(CHANNEL_IDLE.as_bytes()),
        ChannelStats::Unacked(0)
    );
}

#[test]
fn a_channel_not_yet_in_the_statistics_is_unidentified() {
    // Captured: `channel_details` is `[]` for a few hundred ms after a consumer is listed.
    let listing = listing(
        r#"[{"arguments":{},"channel_details":[],"ack_required":true,"active":true,
            "activity_status":"up","consumer_tag":"w","exclusive":false,"prefetch_count":1,
            "queue":{"name":"wpa-probe-lag","vhost":"/"}}]"#,
    )
    .unwrap();
    assert_eq!(
        (listing.consumers.len(), listing.total, listing.unidentified),
        (0, 1, 1)
    );
}

#[test]
fn missing_fields_and_odd_entries_are_unidentified_not_errors() {
    let listing = listing(
        r#"[{}, {"channel_details":{"name":"c"}}, {"channel_details":{"name":5,"peer_host":"10.0.0.1"}},
            {"channel_details":{"name":"c","peer_host":"worker-1.example"}},
            {"channel_details":null}, {"channel_details":{"name":"d","peer_host":"10.0.0.2"}}]"#,
    )
    .unwrap();
    assert_eq!(listing.consumers, [listed("d", "10.0.0.2")]);
    assert_eq!((listing.total, listing.unidentified), (6, 5));
}

#[test]
fn consumers_without_manual_acks_are_left_out() {
    let listing = listing(
        r#"[{"ack_required":false,"channel_details":{"name":"a","peer_host":"10.0.0.1"}},
            {"channel_details":{"name":"b","peer_host":"10.0.0.2"}}]"#,
    )
    .unwrap();
    assert_eq!(listing.consumers, [listed("b", "10.0.0.2")]);
    assert_eq!((listing.total, listing.unidentified), (2, 0));
}

#[test]
fn garbage_listings_are_errors_not_panics() {
    for garbage in [r#""x""#, "{}", "[1]", "null", r#"[{"ack_required":"yes"}]"#] {
        assert!(listing(garbage).is_err(), "{garbage}");
    }
    assert!(
        parse_listing(None)
            .unwrap_err()
            .contains("no consumer_details")
    );
}

#[test]
fn peers_become_plain_ip_addresses() {
    let cases = [
        ("127.0.0.1", Some("127.0.0.1")),
        (" 10.1.2.3 ", Some("10.1.2.3")),
        ("::1", Some("::1")),
        ("[::1]", Some("::1")),
        ("::ffff:10.1.2.3", Some("10.1.2.3")),
        ("[::ffff:10.1.2.3]", Some("10.1.2.3")),
        ("::FFFF:0a01:0203", Some("10.1.2.3")),
        ("2001:db8:0:0:0:0:0:1", Some("2001:db8::1")),
        ("fe80::1%eth0", Some("fe80::1")),
        ("[fd00::5]", Some("fd00::5")),
        ("worker-1.example", None),
        ("", None),
        ("[]", None),
        ("[::1", None),
        ("10.0.0.256", None),
    ];
    for (peer, expected) in cases {
        assert_eq!(normalise_ip(peer).as_deref(), expected, "{peer:?}");
    }
}

#[test]
fn odd_channel_objects_are_unknown() {
    for body in ["{}", r#"{"messages_unacknowledged":null}"#] {
        assert!(
            matches!(channel_stats(body.as_bytes()), ChannelStats::Unknown(ref why) if why.contains("no messages_unacknowledged")),
            "{body}"
        );
    }
    for body in [
        "[]",
        "<html>login</html>",
        r#"{"messages_unacknowledged":-1}"#,
        "",
    ] {
        assert!(
            matches!(channel_stats(body.as_bytes()), ChannelStats::Unknown(ref why) if why.contains("unreadable")),
            "{body}"
        );
    }
}

fn observed(stats: &[(&str, ChannelStats)]) -> Observed {
    Observed {
        listing: parse_listing(Some(&details(QUEUE))).unwrap(),
        stats: stats
            .iter()
            .map(|(name, s)| (name.to_string(), s.clone()))
            .collect(),
    }
}

#[test]
fn busy_and_idle_consumers_from_their_channels() {
    let both = observed(&[
        (BUSY_CHANNEL, ChannelStats::Unacked(1)),
        (IDLE_CHANNEL, ChannelStats::Unacked(0)),
    ]);
    let r = reports(Ok(both), Some(1), Some(2));
    assert_eq!(
        r,
        Reports {
            workers: Some(vec![
                report(BUSY_CHANNEL, "127.0.0.1", true),
                report(IDLE_CHANNEL, "127.0.0.1", false)
            ]),
            partial: None,
        }
    );
}

#[test]
fn in_flight_no_channel_sample_shows_makes_every_consumer_busy() {
    // The queue's lag-corrected figure says 2 in flight, the channels' samples hold 1: the
    // other delivery went to a channel whose sample predates it.
    let lagging = observed(&[
        (BUSY_CHANNEL, ChannelStats::Unacked(1)),
        (IDLE_CHANNEL, ChannelStats::Unacked(0)),
    ]);
    let r = reports(Ok(lagging), Some(2), Some(2));
    assert_eq!(
        r.workers,
        Some(vec![
            report(BUSY_CHANNEL, "127.0.0.1", true),
            report(IDLE_CHANNEL, "127.0.0.1", true)
        ])
    );
    assert_eq!(r.partial, None);
}

#[test]
fn unknown_statistics_are_busy_and_named() {
    let unknown = observed(&[
        (BUSY_CHANNEL, ChannelStats::Unknown("answered 500".into())),
        (IDLE_CHANNEL, ChannelStats::Unacked(0)),
    ]);
    let r = reports(Ok(unknown), Some(0), Some(2));
    assert_eq!(
        r.workers,
        Some(vec![
            report(BUSY_CHANNEL, "127.0.0.1", true),
            report(IDLE_CHANNEL, "127.0.0.1", false)
        ])
    );
    let partial = r.partial.unwrap();
    assert!(
        partial.contains("1 consumer channel(s) unknown (answered 500): reported busy"),
        "{partial}"
    );
}

#[test]
fn channels_over_the_limit_are_busy_and_named() {
    let consumers: Vec<Listed> = (0..MAX_CHANNELS + 2)
        .flat_map(|i| {
            // Two consumers per channel: one request per distinct channel.
            let channel = format!("10.0.0.{i}:1 -> 10.9.9.9:5672 (1)");
            [listed(&channel, "10.0.0.1"), listed(&channel, "10.0.0.1")]
        })
        .collect();
    let listing = Listing {
        total: consumers.len(),
        consumers,
        unidentified: 0,
    };
    let asked = channels_to_ask(&listing);
    assert_eq!(asked.len(), MAX_CHANNELS);
    let stats = asked
        .into_iter()
        .map(|name| (name, ChannelStats::Unacked(0)))
        .collect();
    let r = reports(Ok(Observed { listing, stats }), Some(0), None);
    let workers = r.workers.unwrap();
    assert_eq!(workers.len(), 2 * (MAX_CHANNELS + 2));
    assert_eq!(workers.iter().filter(|w| w.busy).count(), 4);
    assert!(
        r.partial
            .unwrap()
            .contains("2 consumer channel(s) unknown (over the limit of 64"),
    );
}

#[test]
fn a_channel_gone_since_the_listing_is_skipped() {
    let gone = observed(&[
        (BUSY_CHANNEL, ChannelStats::Gone),
        (IDLE_CHANNEL, ChannelStats::Unacked(0)),
    ]);
    let r = reports(Ok(gone), Some(0), Some(1));
    assert_eq!(
        r.workers,
        Some(vec![report(IDLE_CHANNEL, "127.0.0.1", false)])
    );
    assert_eq!(r.partial, None);
}

#[test]
fn denied_channel_statistics_leave_no_reports() {
    let denied = observed(&[
        (BUSY_CHANNEL, ChannelStats::Denied(401)),
        (IDLE_CHANNEL, ChannelStats::Unacked(0)),
    ]);
    let r = reports(Ok(denied), Some(0), Some(2));
    assert_eq!(r.workers, None);
    assert!(r.partial.unwrap().contains("answered 401"));
}

#[test]
fn a_lagging_listing_and_unmapped_consumers_are_named() {
    let mut short = observed(&[
        (BUSY_CHANNEL, ChannelStats::Unacked(1)),
        (IDLE_CHANNEL, ChannelStats::Unacked(0)),
    ]);
    short.listing.unidentified = 1;
    short.listing.total = 3;
    let r = reports(Ok(short), Some(1), Some(4));
    assert_eq!(r.workers.map(|w| w.len()), Some(2));
    let partial = r.partial.unwrap();
    assert!(
        partial.contains("1 consumer(s) not mapped to a pod"),
        "{partial}"
    );
    assert!(partial.contains("lists 3 of 4 consumers"), "{partial}");
}

#[test]
fn an_unreadable_listing_leaves_no_reports() {
    let r = reports(
        Err("unreadable consumer_details (x)".into()),
        Some(0),
        Some(1),
    );
    assert_eq!(r.workers, None);
    assert_eq!(
        r.partial.as_deref(),
        Some("per-consumer reports unavailable: unreadable consumer_details (x)")
    );
}
