//! Redis/Celery provider against a real Redis, with data written by real Celery/kombu.

use crate::support;

use std::time::Duration;

use redis::Commands;
use support::brokers::{
    RedisServer, Reserver, celery_produce, redis_broker, redis_conn, redis_port, unique,
};
use wpa::queue::{Credentials, ProviderOptions, QueueError, QueueProvider, QueueUri};

/// This file's Redis database (other test files use other ones).
const DB: u8 = 1;

fn options() -> ProviderOptions {
    ProviderOptions {
        request_timeout: Duration::from_secs(3),
        ..ProviderOptions::default()
    }
}

async fn provider(uri: &str) -> Box<dyn QueueProvider> {
    provider_with(uri, &Credentials::default()).await
}

async fn provider_with(uri: &str, creds: &Credentials) -> Box<dyn QueueProvider> {
    let uri = QueueUri::parse(uri).expect("test URI parses");
    uri.connect(creds, &options())
        .await
        .expect("connect to redis")
}

fn uri(queue: &str, query: &str) -> String {
    format!(
        "redis://127.0.0.1:{}/{DB}/{}{query}",
        redis_port(),
        urlencode(queue)
    )
}

fn urlencode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

#[tokio::test]
async fn plain_list_backlog_and_absent_list() {
    let queue = unique("plain");
    let mut con = redis_conn(redis_port(), DB);
    let _: () = con
        .rpush(&queue, &["a", "b", "c", "d", "e", "f", "g"])
        .unwrap();
    let mut p = provider(&uri(&queue, "")).await;
    let m = p.poll().await.unwrap();
    assert_eq!(m.visible, 7);
    assert_eq!(m.in_flight, Some(0));
    assert_eq!(m.consumers, None);
    assert_eq!(m.idle, None);

    // An absent list is an empty queue in Redis: 0, not an error.
    let mut absent = provider(&uri(&unique("absent"), "")).await;
    let m = absent.poll().await.unwrap();
    assert_eq!((m.visible, m.in_flight), (0, Some(0)));
    let _: () = con.del(&queue).unwrap();
}

#[tokio::test]
async fn celery_default_priority_keys_are_summed() {
    let queue = unique("celery");
    let broker = redis_broker(redis_port(), DB);
    celery_produce(&broker, &queue, 5, &[]);
    celery_produce(&broker, &queue, 4, &["--priority", "5"]);
    celery_produce(&broker, &queue, 2, &["--priority", "9"]);
    // Celery really spread them over kombu's keys: the bare name and `<q>\x06\x16<step>`.
    let mut con = redis_conn(redis_port(), DB);
    let bare: u64 = con.llen(&queue).unwrap();
    let step3: u64 = con.llen(format!("{queue}\x06\x163")).unwrap();
    let step9: u64 = con.llen(format!("{queue}\x06\x169")).unwrap();
    assert_eq!((bare, step3, step9), (5, 4, 2));

    let mut p = provider(&uri(&queue, "")).await;
    let m = p.poll().await.unwrap();
    assert_eq!(m.visible, 11);
    assert_eq!(m.in_flight, Some(0));
}

#[tokio::test]
async fn celery_custom_steps_separator_and_prefix() {
    let queue = unique("custom");
    let broker = redis_broker(redis_port(), DB);
    let opts = [
        "--priority-steps",
        "0,1,2,3,4,5,6,7,8,9",
        "--sep",
        ":",
        "--prefix",
        "app1:",
    ];
    celery_produce(&broker, &queue, 3, &opts);
    let mut with_priority = opts.to_vec();
    with_priority.extend(["--priority", "7"]);
    celery_produce(&broker, &queue, 6, &with_priority);
    let mut con = redis_conn(redis_port(), DB);
    let step7: u64 = con.llen(format!("app1:{queue}:7")).unwrap();
    assert_eq!(step7, 6, "Celery wrote priority 7 to app1:<q>:7");

    let query = "?priority_steps=0,1,2,3,4,5,6,7,8,9&sep=%3A&prefix=app1%3A";
    let mut p = provider(&uri(&queue, query)).await;
    assert_eq!(p.poll().await.unwrap().visible, 9);

    // Options that disagree with the producer's see other keys: the prefix is missing
    // here, so nothing is found. Workers and producers must agree, and so must the URI.
    let mut mismatched = provider(&uri(&queue, "?sep=%3A")).await;
    assert_eq!(mismatched.poll().await.unwrap().visible, 0);
    let mut steps_only = provider(&uri(&queue, "?prefix=app1%3A")).await;
    assert_eq!(steps_only.poll().await.unwrap().visible, 3);
}

#[tokio::test]
async fn in_flight_counts_kombu_unacked_and_returns_on_release() {
    let queue = unique("inflight");
    let broker = redis_broker(redis_port(), DB);
    celery_produce(&broker, &queue, 6, &[]);
    let mut p = provider(&uri(&queue, "")).await;
    let reserver = Reserver::start(&broker, &queue, 4, &[]);
    assert_eq!(reserver.held, 4);
    let m = p.poll().await.unwrap();
    assert_eq!((m.visible, m.in_flight), (2, Some(4)));
    // A second poll reuses the cached attribution and still agrees.
    let m = p.poll().await.unwrap();
    assert_eq!((m.visible, m.in_flight), (2, Some(4)));

    reserver.release();
    let m = p.poll().await.unwrap();
    assert_eq!((m.visible, m.in_flight), (6, Some(0)));
}

#[tokio::test]
async fn unacked_is_attributed_per_queue() {
    let broker = redis_broker(redis_port(), DB);
    let a = unique("shared-a");
    let b = unique("shared-b");
    celery_produce(&broker, &a, 3, &[]);
    celery_produce(&broker, &b, 5, &["--priority", "6"]);
    // A: 3 via Celery (exchange = queue name, resolved through _kombu.binding.<a>) and
    // 2 via the default exchange "" (routing key = queue). B: 3 of its 5.
    let ra = Reserver::start(&broker, &a, 10, &["--publish-default-exchange", "2"]);
    let rb = Reserver::start(&broker, &b, 3, &[]);
    assert_eq!((ra.held, rb.held), (5, 3));

    let mut pa = provider(&uri(&a, "")).await;
    let mut pb = provider(&uri(&b, "")).await;
    let ma = pa.poll().await.unwrap();
    let mb = pb.poll().await.unwrap();
    assert_eq!((ma.visible, ma.in_flight), (0, Some(5)));
    assert_eq!((mb.visible, mb.in_flight), (2, Some(3)));

    // Another queue's consumer acking (here: giving back) does not move A's count.
    rb.release();
    let ma = pa.poll().await.unwrap();
    let mb = pb.poll().await.unwrap();
    assert_eq!(ma.in_flight, Some(5));
    assert_eq!((mb.visible, mb.in_flight), (5, Some(0)));
    ra.release();
    assert_eq!(pa.poll().await.unwrap().in_flight, Some(0));
}

#[tokio::test]
async fn unacked_under_a_global_prefix() {
    let queue = unique("prefixed");
    let broker = redis_broker(redis_port(), DB);
    let opts = ["--prefix", "pfx2:", "--sep", ":", "--priority-steps", "0,5"];
    celery_produce(&broker, &queue, 4, &opts);
    let reserver = Reserver::start(&broker, &queue, 3, &opts);
    assert_eq!(reserver.held, 3);
    let mut con = redis_conn(redis_port(), DB);
    let prefixed: u64 = con.hlen("pfx2:unacked").unwrap();
    assert!(prefixed >= 3, "kombu wrote pfx2:unacked");
    let mut p = provider(&uri(&queue, "?prefix=pfx2%3A&sep=%3A&priority_steps=0,5")).await;
    let m = p.poll().await.unwrap();
    assert_eq!((m.visible, m.in_flight), (1, Some(3)));
    reserver.release();
}

#[tokio::test]
async fn malformed_unacked_entries_are_skipped_not_fatal() {
    // A private server: this test writes its own `unacked` hash.
    let server = RedisServer::start(&[]);
    let queue = unique("odd");
    let mut con = redis_conn(server.port, 0);
    let _: () = con.rpush(&queue, "x").unwrap();
    let entries = [
        ("t1", format!(r#"[{{"body": "b"}}, "", "{queue}"]"#)),
        ("t2", "not json".to_string()),
        ("t3", format!(r#"[{{}}, "unbound-exchange", "{queue}"]"#)),
        ("t4", r#"[{}, "", "another-queue"]"#.to_string()),
        // Bound only in kombu's permanent set (its table was swept): still ours.
        ("t5", r#"[{}, "perm-ex", "rk1"]"#.to_string()),
    ];
    let _: () = con
        .sadd(
            "_kombu.binding_permanent.perm-ex",
            format!("rk1\x06\x16\x06\x16{queue}"),
        )
        .unwrap();
    for (tag, value) in &entries {
        let _: () = con.hset("unacked", tag, value).unwrap();
    }
    let mut p = provider(&format!("redis://127.0.0.1:{}/0/{queue}", server.port)).await;
    let m = p.poll().await.unwrap();
    assert_eq!((m.visible, m.in_flight), (1, Some(2)));
}

#[tokio::test]
async fn wrong_key_type_is_a_bad_response_naming_the_key() {
    let queue = unique("wrongtype");
    let mut con = redis_conn(redis_port(), DB);
    let _: () = con.set(format!("{queue}\x06\x166"), "a string").unwrap();
    let mut p = provider(&uri(&queue, "")).await;
    let err = p.poll().await.unwrap_err();
    match &err {
        QueueError::BadResponse { detail, .. } => {
            assert!(detail.contains("is a string, not a list"), "{detail}")
        }
        other => panic!("expected BadResponse, got {other:?}"),
    }
    let _: () = con.del(format!("{queue}\x06\x166")).unwrap();
}

#[tokio::test]
async fn authentication_errors_and_credential_precedence() {
    let server = RedisServer::start(&["--requirepass", "right-pass"]);
    let queue = unique("auth");
    let uri = format!("redis://:wrong-pass@127.0.0.1:{}/0/{queue}", server.port);
    let parsed = QueueUri::parse(&uri).unwrap();
    let err = match parsed.connect(&Credentials::default(), &options()).await {
        Ok(_) => panic!("wrong password accepted"),
        Err(e) => e,
    };
    assert!(matches!(err, QueueError::Denied { .. }), "{err:?}");
    assert!(!err.to_string().contains("wrong-pass"), "{err}");

    // No password at all: the connection opens, the first command is refused.
    let anonymous = format!("redis://127.0.0.1:{}/0/{queue}", server.port);
    let parsed = QueueUri::parse(&anonymous).unwrap();
    match parsed.connect(&Credentials::default(), &options()).await {
        Ok(mut p) => {
            let err = p.poll().await.unwrap_err();
            assert!(matches!(err, QueueError::Denied { .. }), "{err:?}");
        }
        Err(err) => assert!(matches!(err, QueueError::Denied { .. }), "{err:?}"),
    }

    // The Secret's password wins over the URI's.
    let creds = Credentials {
        password: Some("right-pass".to_string()),
        ..Credentials::default()
    };
    let mut p = provider_with(&uri, &creds).await;
    assert_eq!(p.poll().await.unwrap().visible, 0);
}

#[tokio::test]
async fn unreachable_redis_is_unavailable() {
    let port = support::brokers::free_port();
    let parsed = QueueUri::parse(&format!("redis://127.0.0.1:{port}/0/q")).unwrap();
    let err = match parsed.connect(&Credentials::default(), &options()).await {
        Ok(_) => panic!("connected to nothing"),
        Err(e) => e,
    };
    assert!(matches!(err, QueueError::Unavailable { .. }), "{err:?}");
}

/// Clients connected to a private server, not counting the connection asking.
fn connected_clients(port: u16) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("clients")
        .query(&mut redis_conn(port, 0))
        .unwrap();
    let n: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("connected_clients:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("connected_clients in INFO");
    n - 1
}

#[tokio::test]
async fn queues_on_one_server_share_one_connection() {
    let mut server = RedisServer::start(&[]);
    let port = server.port;
    let opts = options();
    let connect = |db: u8, queue: String| {
        let opts = opts.clone();
        async move {
            let uri = QueueUri::parse(&format!("redis://127.0.0.1:{port}/{db}/{queue}")).unwrap();
            uri.connect(&Credentials::default(), &opts)
                .await
                .expect("connect")
        }
    };
    // Started together, as the poll loops of a controller are: one connection per DB.
    let mut zero: Vec<Box<dyn QueueProvider>> =
        futures::future::join_all((0..20).map(|i| connect(0, format!("q{i}")))).await;
    let mut two: Vec<Box<dyn QueueProvider>> =
        futures::future::join_all((0..5).map(|i| connect(2, format!("q{i}")))).await;
    assert_eq!(connected_clients(port), 2);
    assert_eq!(opts.redis_connections.live(), 2);

    // Concurrent polls on the shared connection each get their own queue's answer.
    let _: () = redis_conn(port, 0).rpush("q3", &["a", "b"]).unwrap();
    let _: () = redis_conn(port, 2).rpush("q3", &["a"]).unwrap();
    let polls = futures::future::join_all(zero.iter_mut().map(|p| p.poll())).await;
    let visible: Vec<u64> = polls.into_iter().map(|m| m.unwrap().visible).collect();
    let mut expected = vec![0; 20];
    expected[3] = 2;
    assert_eq!(visible, expected);
    assert_eq!(two[3].poll().await.unwrap().visible, 1);

    // The last queue of a DB closes its connection.
    two.clear();
    support::brokers::eventually(
        Duration::from_secs(10),
        "the DB 2 connection to close",
        async || (connected_clients(port) == 1).then_some(()),
    )
    .await;
    assert_eq!(opts.redis_connections.live(), 1);

    // Every queue on a shared connection survives a restart of the server.
    server.stop();
    server.restart();
    for (i, p) in zero.iter_mut().enumerate() {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            match p.poll().await {
                Ok(m) => {
                    assert_eq!(m.visible, 0, "q{i} after the restart (no data kept)");
                    break;
                }
                Err(e) if std::time::Instant::now() > deadline => {
                    panic!("q{i} never reconnected: {e}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
    assert_eq!(connected_clients(port), 1);
}

#[tokio::test]
async fn reconnects_after_a_redis_restart() {
    let mut server = RedisServer::start(&[]);
    let queue = unique("restart");
    let _: () = redis_conn(server.port, 0)
        .rpush(&queue, &["1", "2"])
        .unwrap();
    let mut p = provider(&format!("redis://127.0.0.1:{}/0/{queue}", server.port)).await;
    assert_eq!(p.poll().await.unwrap().visible, 2);

    server.stop();
    let err = p.poll().await.unwrap_err();
    assert!(matches!(err, QueueError::Unavailable { .. }), "{err:?}");

    server.restart();
    let _: () = redis_conn(server.port, 0)
        .rpush(&queue, &["3", "4", "5"])
        .unwrap();
    // The same provider (no reconnect by hand) reads the restarted server.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let visible = loop {
        match p.poll().await {
            Ok(m) => break m.visible,
            Err(e) if std::time::Instant::now() > deadline => panic!("never reconnected: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    assert_eq!(visible, 3);
}

#[tokio::test]
async fn a_real_celery_worker_with_acks_late_is_seen_in_flight() {
    let queue = unique("worker");
    let broker = redis_broker(redis_port(), DB);
    celery_produce(&broker, &queue, 6, &[]);
    let mut p = provider(&uri(&queue, "")).await;
    let m = p.poll().await.unwrap();
    assert_eq!((m.visible, m.in_flight), (6, Some(0)));

    let _worker = support::brokers::CeleryWorker::start(&broker, &queue, 2, 1.0);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut max_in_flight = 0;
    loop {
        let m = p.poll().await.unwrap();
        let in_flight = m.in_flight.unwrap();
        // Two slots, prefetch multiplier 1: never more than 2 reserved at once, and
        // nothing is counted twice.
        assert!(in_flight <= 2, "{m:?}");
        assert!(m.visible + in_flight <= 6, "{m:?}");
        max_in_flight = max_in_flight.max(in_flight);
        if m.visible == 0 && in_flight == 0 && max_in_flight > 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the worker did not finish: {m:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        max_in_flight, 2,
        "running acks_late tasks count as in flight"
    );
}

#[tokio::test]
async fn topic_exchange_deliveries_are_attributed_through_the_binding() {
    let broker = redis_broker(redis_port(), DB);
    let queue = unique("topic-q");
    let other = unique("topic-other");
    let exchange = unique("topic-ex");
    // kombu stores the binding `task.#` with its regex; the messages' routing key
    // `task.email.send` matches it, so they reach (and are reserved from) the queue.
    let reserver = Reserver::start(
        &broker,
        &queue,
        10,
        &[
            "--publish-topic",
            "3",
            "--exchange",
            &exchange,
            "--binding-key",
            "task.#",
            "--routing-key",
            "task.email.send",
        ],
    );
    assert_eq!(reserver.held, 3);
    let mut con = redis_conn(redis_port(), DB);
    let members: Vec<String> = con.smembers(format!("_kombu.binding.{exchange}")).unwrap();
    assert_eq!(members.len(), 1, "{members:?}");
    assert!(
        members[0].starts_with("task.#\x06\x16^task\\."),
        "{members:?}"
    );

    let mut p = provider(&uri(&queue, "")).await;
    assert_eq!(p.poll().await.unwrap().in_flight, Some(3));
    // Another queue of the same DB does not claim them.
    let mut q = provider(&uri(&other, "")).await;
    assert_eq!(q.poll().await.unwrap().in_flight, Some(0));
    reserver.release();
    let m = p.poll().await.unwrap();
    assert_eq!((m.visible, m.in_flight), (3, Some(0)));
}
