//! The registry against a real Redis: shared loops, wakeups, staleness and recovery.

use crate::support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::Commands;
use support::brokers::{RedisServer, eventually, redis_conn, redis_port, unique};
use tokio::sync::broadcast;
use wpa::queue::registry::{PollObserver, PollSettings, Registry, Subscription};
use wpa::queue::{Credentials, ProviderKind, ProviderOptions, QueueError, QueueUri};

/// This file's Redis database.
const DB: u8 = 2;

const FAST: Duration = Duration::from_millis(200);

fn registry(idle_window: Duration) -> Registry {
    Registry::new(
        PollSettings::default()
            .with_max_backoff(Duration::from_secs(1))
            .with_interval(ProviderKind::Redis, FAST),
        ProviderOptions {
            request_timeout: Duration::from_secs(2),
            idle_window,
            ..ProviderOptions::default()
        },
    )
}

fn sub(port: u16, db: u8, queue: &str, target: u64) -> Subscription {
    Subscription {
        queues: vec![QueueUri::parse(&format!("redis://127.0.0.1:{port}/{db}/{queue}")).unwrap()],
        credentials: Credentials::default(),
        poll_interval: None,
        target_messages_per_worker: target,
    }
}

/// Counts polls per queue label.
#[derive(Default)]
struct Counter {
    polls: Mutex<HashMap<String, (u64, u64)>>,
}

impl Counter {
    fn polls(&self, queue: &str) -> u64 {
        self.polls
            .lock()
            .unwrap()
            .get(queue)
            .map_or(0, |(ok, failed)| ok + failed)
    }
}

impl PollObserver for Counter {
    fn observe(
        &self,
        kind: ProviderKind,
        queue: &str,
        _duration: Duration,
        result: Result<(), &QueueError>,
    ) {
        assert_eq!(kind, ProviderKind::Redis);
        let mut polls = self.polls.lock().unwrap();
        let entry = polls.entry(queue.to_string()).or_default();
        if result.is_ok() {
            entry.0 += 1;
        } else {
            entry.1 += 1;
        }
    }
}

/// Waits for `who` on the wakeup channel, skipping other subscribers' wakeups.
async fn wakeup_for(rx: &mut broadcast::Receiver<String>, who: &str, timeout: Duration) {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Ok(name)) if name == who => return,
            Ok(Ok(_)) | Ok(Err(broadcast::error::RecvError::Lagged(_))) => continue,
            Ok(Err(e)) => panic!("wakeup channel: {e}"),
            Err(_) => panic!("no wakeup for {who} within {timeout:?}"),
        }
    }
}

#[tokio::test]
async fn subscribers_of_one_queue_share_one_loop() {
    let reg = registry(Duration::from_secs(60));
    let counter = Arc::new(Counter::default());
    reg.set_observer(counter.clone());
    let queue = unique("shared");
    let spec = sub(redis_port(), DB, &queue, 5);
    let label = spec.queues[0].redacted();
    let mut rx = reg.wakeups();
    reg.subscribe("ns/a", spec.clone()).unwrap();
    reg.subscribe("ns/b", spec.clone()).unwrap();
    assert_eq!(reg.active_loops(), 1);
    wakeup_for(&mut rx, "ns/a", Duration::from_secs(10)).await;

    let start_polls = counter.polls(&label);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let polls = counter.polls(&label) - start_polls;
    let expected_max = (started.elapsed().as_millis() / FAST.as_millis()) as u64 + 2;
    assert!(polls >= 2, "the loop polls ({polls})");
    assert!(
        polls <= expected_max,
        "{polls} polls in {:?}: one loop, not two",
        started.elapsed()
    );
    assert_eq!(reg.state("ns/a"), reg.state("ns/b"));

    reg.unsubscribe("ns/a");
    assert_eq!(reg.active_loops(), 1);
    assert!(reg.state("ns/a").is_none());
    assert!(reg.state("ns/b").is_some());
    reg.unsubscribe("ns/b");
    assert_eq!(reg.active_loops(), 0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after_stop = counter.polls(&label);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        counter.polls(&label),
        after_stop,
        "the loop stopped polling"
    );
}

#[tokio::test]
async fn backlog_on_an_empty_queue_wakes_subscribers_quickly() {
    let reg = registry(Duration::from_secs(60));
    let queue = unique("wake");
    let mut rx = reg.wakeups();
    reg.subscribe("ns/w", sub(redis_port(), DB, &queue, 10))
        .unwrap();
    // The first poll result always wakes.
    wakeup_for(&mut rx, "ns/w", Duration::from_secs(10)).await;
    let state = reg.state("ns/w").unwrap();
    assert_eq!(state.metrics.as_ref().map(|m| m.visible), Some(0));
    assert!(!state.stale);

    let mut con = redis_conn(redis_port(), DB);
    let _: () = con.rpush(&queue, &["1", "2", "3"]).unwrap();
    let pushed = Instant::now();
    wakeup_for(&mut rx, "ns/w", Duration::from_secs(5)).await;
    let waited = pushed.elapsed();
    // About two poll intervals, with slack for a loaded machine.
    assert!(
        waited < Duration::from_millis(1500),
        "woken after {waited:?}"
    );
    assert_eq!(
        reg.state("ns/w").unwrap().metrics.map(|m| m.visible),
        Some(3)
    );

    // Still 1 worker's worth (ceil(5/10) == ceil(3/10)): no wakeup for that.
    let _: () = con.rpush(&queue, &["4", "5"]).unwrap();
    eventually(Duration::from_secs(5), "the new backlog", || async {
        (reg.state("ns/w")?.metrics?.visible == 5).then_some(())
    })
    .await;
    assert!(
        !matches!(rx.try_recv(), Ok(ref who) if who == "ns/w"),
        "no wakeup when nothing the subscriber cares about changed"
    );
    // 11 messages need a second worker: wakeup.
    let more: Vec<String> = (0..6).map(|i| i.to_string()).collect();
    let _: () = con.rpush(&queue, &more).unwrap();
    wakeup_for(&mut rx, "ns/w", Duration::from_secs(5)).await;
    let _: () = con.del(&queue).unwrap();
    reg.shutdown().await;
    assert_eq!(reg.active_loops(), 0);
}

#[tokio::test]
async fn a_subscriber_on_several_queues_sees_their_sum_and_shares_their_loops() {
    let reg = registry(Duration::from_secs(60));
    let (a, b) = (unique("multi-a"), unique("multi-b"));
    let one = sub(redis_port(), DB, &a, 10);
    let mut both = sub(redis_port(), DB, &a, 10);
    both.queues
        .push(sub(redis_port(), DB, &b, 10).queues.remove(0));
    let mut rx = reg.wakeups();
    reg.subscribe("ns/one", one).unwrap();
    reg.subscribe("ns/both", both.clone()).unwrap();
    assert_eq!(reg.active_loops(), 2, "one loop per distinct queue");
    wakeup_for(&mut rx, "ns/both", Duration::from_secs(10)).await;
    let state = reg.state("ns/both").unwrap();
    assert_eq!(state.metrics.as_ref().map(|m| m.visible), Some(0));

    // 4 + 4 messages, then 7 + 7: each queue alone stays at one worker of 10, the sum
    // goes from one worker to two, and that wakes the subscriber of both.
    let mut con = redis_conn(redis_port(), DB);
    let four: Vec<String> = (0..4).map(|i| i.to_string()).collect();
    let three: Vec<String> = (0..3).map(|i| i.to_string()).collect();
    let _: () = con.rpush(&a, &four).unwrap();
    let _: () = con.rpush(&b, &four).unwrap();
    eventually(Duration::from_secs(5), "the summed backlog", || async {
        (reg.state("ns/both")?.metrics?.visible == 8).then_some(())
    })
    .await;
    // Let the wakeups for 8 arrive, then forget them.
    tokio::time::sleep(FAST * 2).await;
    while rx.try_recv().is_ok() {}
    let _: () = con.rpush(&a, &three).unwrap();
    let _: () = con.rpush(&b, &three).unwrap();
    wakeup_for(&mut rx, "ns/both", Duration::from_secs(5)).await;
    eventually(Duration::from_secs(5), "both pushes seen", || async {
        (reg.state("ns/both")?.metrics?.visible == 14).then_some(())
    })
    .await;
    let per_queue: Vec<u64> = reg
        .states("ns/both")
        .iter()
        .map(|s| s.metrics.as_ref().map_or(0, |m| m.visible))
        .collect();
    assert_eq!(per_queue, vec![7, 7]);
    assert_eq!(
        reg.state("ns/one").unwrap().metrics.map(|m| m.visible),
        Some(7)
    );

    // Dropping queue b from the list stops its loop; queue a's stays for both.
    let mut only_a = both.clone();
    only_a.queues.truncate(1);
    reg.subscribe("ns/both", only_a).unwrap();
    assert_eq!(reg.active_loops(), 1);
    reg.unsubscribe("ns/one");
    reg.unsubscribe("ns/both");
    assert_eq!(reg.active_loops(), 0);
    // A queue listed twice is a configuration error.
    let mut twice = both.clone();
    twice.queues.push(twice.queues[0].clone());
    assert!(matches!(
        reg.subscribe("ns/twice", twice),
        Err(QueueError::Config(_))
    ));
    let _: () = con.del(&[&a, &b]).unwrap();
}

#[tokio::test]
async fn resubscribing_to_another_queue_moves_the_subscriber() {
    let reg = registry(Duration::from_secs(60));
    let q1 = unique("from");
    let q2 = unique("to");
    let mut con = redis_conn(redis_port(), DB);
    let _: () = con.rpush(&q2, &["a", "b", "c", "d"]).unwrap();
    reg.subscribe("ns/m", sub(redis_port(), DB, &q1, 1))
        .unwrap();
    reg.subscribe("ns/other", sub(redis_port(), DB, &q1, 1))
        .unwrap();
    eventually(Duration::from_secs(10), "first poll", || async {
        reg.state("ns/m")?.metrics.map(|_| ())
    })
    .await;
    reg.subscribe("ns/m", sub(redis_port(), DB, &q2, 1))
        .unwrap();
    assert_eq!(reg.active_loops(), 2);
    let visible = eventually(Duration::from_secs(10), "the new queue's state", || async {
        reg.state("ns/m")?.metrics.map(|m| m.visible)
    })
    .await;
    assert_eq!(visible, 4);
    // The old loop lives on for its other subscriber, and stops when it leaves.
    reg.unsubscribe("ns/other");
    assert_eq!(reg.active_loops(), 1);
    reg.unsubscribe("ns/m");
    assert_eq!(reg.active_loops(), 0);
    let _: () = con.del(&q2).unwrap();
}

#[tokio::test]
async fn broker_outage_marks_state_stale_and_recovers_by_itself() {
    let mut server = RedisServer::start(&[]);
    let reg = registry(Duration::from_secs(60));
    let queue = unique("outage");
    let _: () = redis_conn(server.port, 0)
        .rpush(&queue, &["1", "2", "3", "4"])
        .unwrap();
    let mut rx = reg.wakeups();
    reg.subscribe("ns/o", sub(server.port, 0, &queue, 2))
        .unwrap();
    wakeup_for(&mut rx, "ns/o", Duration::from_secs(10)).await;
    let before = reg.state("ns/o").unwrap();
    assert_eq!(before.metrics.as_ref().map(|m| m.visible), Some(4));

    server.stop();
    wakeup_for(&mut rx, "ns/o", Duration::from_secs(15)).await;
    let down = eventually(Duration::from_secs(15), "stale state", || async {
        reg.state("ns/o").filter(|s| s.stale)
    })
    .await;
    assert!(
        matches!(down.error, Some(QueueError::Unavailable { .. })),
        "{down:?}"
    );
    assert_eq!(
        down.metrics, before.metrics,
        "the last good metrics are kept"
    );
    assert_eq!(down.last_success, before.last_success);
    assert!(down.consecutive_failures >= 1);
    assert!(!down.idle);

    server.restart();
    let _: () = redis_conn(server.port, 0)
        .rpush(&queue, &["5", "6"])
        .unwrap();
    let up = eventually(Duration::from_secs(30), "recovery", || async {
        reg.state("ns/o").filter(|s| !s.stale)
    })
    .await;
    assert_eq!(up.error, None);
    assert_eq!(up.consecutive_failures, 0);
    assert_eq!(up.metrics.map(|m| m.visible), Some(2));
    assert_eq!(reg.active_loops(), 1);
    reg.shutdown().await;
}

#[tokio::test]
async fn broker_down_at_subscribe_time_is_retried_not_refused() {
    let port = support::brokers::free_port();
    let reg = registry(Duration::from_secs(60));
    reg.subscribe("ns/late", sub(port, 0, "q", 1)).unwrap();
    let failing = eventually(Duration::from_secs(10), "a failed poll", || async {
        reg.state("ns/late").filter(|s| s.error.is_some())
    })
    .await;
    assert!(failing.stale && failing.metrics.is_none());
    reg.shutdown().await;
}

#[tokio::test]
async fn idle_is_inferred_over_the_window() {
    let reg = registry(Duration::from_secs(1));
    let queue = unique("idle");
    let mut rx = reg.wakeups();
    let subscribed = Instant::now();
    reg.subscribe("ns/i", sub(redis_port(), DB, &queue, 1))
        .unwrap();
    wakeup_for(&mut rx, "ns/i", Duration::from_secs(10)).await;
    // An empty queue is not idle at once...
    let first = reg.state("ns/i").unwrap();
    if subscribed.elapsed() < Duration::from_millis(900) {
        assert!(!first.idle);
    }
    // ...but after a window of continuous emptiness (an idle toggle wakes too).
    wakeup_for(&mut rx, "ns/i", Duration::from_secs(10)).await;
    assert!(reg.state("ns/i").unwrap().idle);
    let _: () = redis_conn(redis_port(), DB).rpush(&queue, "job").unwrap();
    wakeup_for(&mut rx, "ns/i", Duration::from_secs(5)).await;
    assert!(!reg.state("ns/i").unwrap().idle);
    let _: () = redis_conn(redis_port(), DB).del(&queue).unwrap();
    reg.shutdown().await;
}

#[tokio::test]
async fn bad_configuration_fails_subscribe() {
    let reg = registry(Duration::from_secs(60));
    let mut spec = sub(redis_port(), DB, "q", 0);
    assert!(matches!(
        reg.subscribe("ns/bad", spec.clone()),
        Err(QueueError::Config(_))
    ));
    spec.target_messages_per_worker = 1;
    spec.queues = vec![QueueUri::parse("http+json://127.0.0.1:1/m").unwrap()];
    spec.credentials.authorization = Some("bad\nvalue".to_string());
    assert!(matches!(
        reg.subscribe("ns/bad", spec),
        Err(QueueError::Config(_))
    ));
    assert_eq!(reg.active_loops(), 0);
}

#[tokio::test]
async fn a_shared_loop_polls_at_its_subscribers_smallest_interval() {
    let reg = Registry::new(
        PollSettings::default().with_interval(ProviderKind::Redis, Duration::from_secs(30)),
        ProviderOptions::default(),
    );
    let counter = Arc::new(Counter::default());
    reg.set_observer(counter.clone());
    let queue = unique("interval");
    let slow = sub(redis_port(), DB, &queue, 1);
    let label = slow.queues[0].redacted();
    reg.subscribe("ns/slow", slow.clone()).unwrap();
    eventually(Duration::from_secs(10), "the first poll", || async {
        (counter.polls(&label) >= 1).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(counter.polls(&label), 1, "30 s default interval");

    let fast = Subscription {
        poll_interval: Some(Duration::from_millis(100)),
        ..slow
    };
    reg.subscribe("ns/fast", fast).unwrap();
    eventually(Duration::from_secs(10), "faster polling", || async {
        (counter.polls(&label) >= 6).then_some(())
    })
    .await;
    assert_eq!(reg.active_loops(), 1);

    // The fast subscriber leaves: back to the slow interval after the current sleep.
    reg.unsubscribe("ns/fast");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let settled = counter.polls(&label);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(counter.polls(&label), settled);

    // The remaining subscriber asks for a shorter interval itself: applied at once.
    let quicker = Subscription {
        poll_interval: Some(Duration::from_millis(100)),
        ..sub(redis_port(), DB, &queue, 1)
    };
    reg.subscribe("ns/slow", quicker).unwrap();
    eventually(Duration::from_secs(10), "the updated interval", || async {
        (counter.polls(&label) >= settled + 5).then_some(())
    })
    .await;
    reg.shutdown().await;
}

#[tokio::test]
async fn a_broker_that_never_answers_does_not_stall_the_loop() {
    // Accepts connections and reads, but never writes a byte.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let reg = Registry::new(
        PollSettings::default()
            .with_max_backoff(Duration::from_millis(500))
            .with_interval(ProviderKind::Redis, FAST),
        ProviderOptions {
            request_timeout: Duration::from_millis(300),
            ..ProviderOptions::default()
        },
    );
    reg.subscribe("ns/mute", sub(port, 0, "q", 1)).unwrap();
    let state = eventually(Duration::from_secs(10), "a timeout error", || async {
        reg.state("ns/mute").filter(|s| s.consecutive_failures >= 2)
    })
    .await;
    assert!(state.stale);
    assert!(
        matches!(state.error, Some(QueueError::Unavailable { .. })),
        "{:?}",
        state.error
    );
    reg.shutdown().await;
}

/// "Not found" is a clear answer, not an outage: asked again at the poll interval, so the
/// queue's creation is noticed within one interval. (An HTTP endpoint answering 404 until
/// the queue exists; a RabbitMQ queue nobody declared is not an error at all.)
#[tokio::test(flavor = "multi_thread")]
async fn a_missing_queue_is_asked_again_at_the_poll_interval_not_after_backoff() {
    use axum::http::StatusCode;
    use std::sync::atomic::{AtomicBool, Ordering};
    let exists = Arc::new(AtomicBool::new(false));
    let created_flag = exists.clone();
    let app = axum::Router::new().route(
        "/queue",
        axum::routing::get(move || {
            let exists = exists.load(Ordering::SeqCst);
            async move {
                if exists {
                    (StatusCode::OK, r#"{"visible": 1}"#)
                } else {
                    (StatusCode::NOT_FOUND, "no such queue")
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let registry = Registry::new(
        // The default backoff cap: a backing-off loop would wait seconds by now.
        PollSettings::default().with_interval(ProviderKind::Http, Duration::from_millis(500)),
        ProviderOptions {
            request_timeout: Duration::from_secs(2),
            ..ProviderOptions::default()
        },
    );
    let uri = QueueUri::parse(&format!("http+json://{addr}/queue")).unwrap();
    registry
        .subscribe(
            "ns/missing",
            Subscription {
                queues: vec![uri],
                credentials: Credentials::default(),
                poll_interval: None,
                target_messages_per_worker: 1,
            },
        )
        .unwrap();
    eventually(Duration::from_secs(20), "NotFound", async || {
        registry
            .state("ns/missing")
            .and_then(|s| s.error)
            .filter(|e| matches!(e, QueueError::NotFound { .. }))
    })
    .await;
    // Long enough for an exponential backoff from 0.5 s to have grown past 4 s.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let failures = registry.state("ns/missing").unwrap().consecutive_failures;
    assert!(
        failures >= 6,
        "only {failures} polls of the missing queue in 5 s"
    );

    created_flag.store(true, Ordering::SeqCst);
    let created = Instant::now();
    eventually(
        Duration::from_secs(20),
        "the new queue's backlog",
        async || {
            registry
                .state("ns/missing")
                .and_then(|s| s.metrics.filter(|m| m.visible == 1 && !s.stale))
        },
    )
    .await;
    let noticed = created.elapsed();
    assert!(
        noticed < Duration::from_millis(2500),
        "creating the queue was noticed after {noticed:?}"
    );
    registry.shutdown().await;
}
