//! Worker-event listeners against real Celery workers on Redis and RabbitMQ: online,
//! heartbeats with the number of running tasks, offline on SIGTERM, Redis databases and key
//! prefixes kept apart, and reconnection after the pub/sub connection is killed.

use crate::support;

use std::time::Duration;

use support::brokers::{CeleryWorker, RedisServer, celery_produce, redis_port, unique};
use support::brokers_amqp::{close_connections, create_vhost, delete_vhost};
use tokio::sync::mpsc;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use wpa::queue::{Credentials, QueueUri};
use wpa::workers::{BeatKind, EventSource, ListenError, ListenSettings, Listener, WorkerBeat};

/// This file's Redis database for the non-default-database test (pub/sub channels are
/// global; the database only changes the channel name).
const DB: u8 = 11;
/// A Celery worker takes a few seconds to start on a loaded machine.
const STARTUP: Duration = Duration::from_secs(40);
/// Heartbeats come every 2 s; leave room for a busy machine.
const BEATS: Duration = Duration::from_secs(15);
/// How long the sleep task runs: long enough for at least two heartbeats while busy.
const TASK_SECONDS: &str = "6";

fn settings() -> ListenSettings {
    ListenSettings {
        connect_timeout: Duration::from_secs(5),
        ping_interval: Duration::from_secs(2),
        min_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_secs(2),
    }
}

fn source(uri: &str) -> EventSource {
    let uri = QueueUri::parse(uri).expect("test URI parses");
    uri.celery_events(&Credentials::default())
        .expect("a broker with worker events")
}

/// A listener run as the controller runs it: on its own task until its token is cancelled.
struct Running {
    subscriptions: watch::Receiver<u64>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    fn start(listener: Listener) -> Self {
        let subscriptions = listener.subscriptions();
        let stop = CancellationToken::new();
        let task = tokio::spawn(listener.run(stop.clone().cancelled_owned()));
        Running {
            subscriptions,
            stop,
            task,
        }
    }

    fn subscriptions(&self) -> watch::Receiver<u64> {
        self.subscriptions.clone()
    }

    /// Stops the listener and waits until its connection is closed.
    async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// A running listener and what it heard.
struct Heard {
    beats: mpsc::Receiver<WorkerBeat>,
    handle: Running,
}

/// Starts a listener on `source` and waits until it is subscribed.
async fn listen(source: EventSource) -> Heard {
    let (tx, beats) = mpsc::channel(1024);
    let handle = Running::start(Listener::new(source, tx, settings()));
    wait_subscribed(&handle, 1).await;
    Heard { beats, handle }
}

async fn wait_subscribed(handle: &Running, at_least: u64) {
    let mut subscriptions = handle.subscriptions();
    tokio::time::timeout(STARTUP, subscriptions.wait_for(|n| *n >= at_least))
        .await
        .unwrap_or_else(|_| panic!("no subscription #{at_least} within {STARTUP:?}"))
        .expect("listener alive");
}

impl Heard {
    /// The next beat of `host` that satisfies `wanted` (other workers of concurrent tests
    /// publish on the same channels; earlier beats of `host` are skipped).
    async fn next(
        &mut self,
        host: &str,
        within: Duration,
        what: &str,
        wanted: impl Fn(&WorkerBeat) -> bool,
    ) -> WorkerBeat {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let beat = tokio::time::timeout_at(deadline, self.beats.recv())
                .await
                .unwrap_or_else(|_| panic!("no {what} from {host} within {within:?}"))
                .expect("listener alive");
            if beat.hostname == host && wanted(&beat) {
                return beat;
            }
        }
    }
}

fn kind(k: BeatKind) -> impl Fn(&WorkerBeat) -> bool {
    move |b| b.kind == k
}

fn heartbeat_with(active: u32) -> impl Fn(&WorkerBeat) -> bool {
    move |b| b.kind == BeatKind::Heartbeat && b.active == active
}

/// Online, idle heartbeats, a busy heartbeat while a task sleeps, idle again, offline on
/// SIGTERM. Returns the worker's hostname.
async fn worker_lifecycle(heard: &mut Heard, broker: &str, keyprefix: Option<&str>) -> String {
    let queue = unique("wpa-ev");
    let host = format!("celery@{}", unique("wpa-test"));
    let mut worker = CeleryWorker::with_events(broker, &queue, &host, keyprefix);

    let online = heard
        .next(&host, STARTUP, "worker-online", kind(BeatKind::Online))
        .await;
    assert_eq!((online.active, online.freq), (0, 2.0), "{online:?}");
    assert!(online.sent_at.is_some(), "{online:?}");
    heard
        .next(&host, BEATS, "an idle heartbeat", heartbeat_with(0))
        .await;

    let mut produce_args = vec!["--sleep", TASK_SECONDS];
    if let Some(prefix) = keyprefix {
        produce_args.extend(["--prefix", prefix]);
    }
    celery_produce(broker, &queue, 1, &produce_args);
    let busy = heard
        .next(&host, BEATS, "a busy heartbeat", heartbeat_with(1))
        .await;
    assert!(busy.processed >= 1, "{busy:?}");
    heard
        .next(
            &host,
            BEATS,
            "an idle heartbeat after the task",
            heartbeat_with(0),
        )
        .await;

    worker.sigterm();
    let offline = heard
        .next(&host, BEATS, "worker-offline", kind(BeatKind::Offline))
        .await;
    assert_eq!(offline.active, 0, "{offline:?}");
    support::brokers::eventually(BEATS, "the worker to exit", async || {
        worker.exited().then_some(())
    })
    .await;
    // One subscription all along: the liveness PINGs (every 2 s here) were answered.
    assert_eq!(
        *heard.handle.subscriptions().borrow(),
        1,
        "the listener reconnected"
    );
    host
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_redis_lifecycle_on_db_0() {
    let port = redis_port();
    let mut heard = listen(source(&format!("redis://127.0.0.1:{port}/0/any"))).await;
    worker_lifecycle(&mut heard, &format!("redis://127.0.0.1:{port}/0"), None).await;
    heard.handle.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_rabbitmq_lifecycle_on_a_vhost_without_the_exchange() {
    // A fresh vhost has no `celeryev` exchange until the listener declares it the way
    // Celery does; the worker must then be happy with it.
    let vhost = unique("wpa-ev");
    create_vhost(&vhost).await;
    let mut heard = listen(source(&format!(
        "amqp://guest:guest@127.0.0.1:5672/{vhost}/q"
    )))
    .await;
    worker_lifecycle(
        &mut heard,
        &format!("amqp://guest:guest@127.0.0.1:5672/{vhost}"),
        None,
    )
    .await;
    heard.handle.stop().await;
    delete_vhost(&vhost).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_rabbitmq_events_on_the_default_vhost() {
    // Here the exchange usually exists already (declared by earlier workers): the
    // passive check must accept Celery's declaration.
    let mut heard = listen(source("amqp://guest:guest@127.0.0.1:5672/%2F/q")).await;
    let queue = unique("wpa-ev");
    let host = format!("celery@{}", unique("wpa-test"));
    let _worker =
        CeleryWorker::with_events("amqp://guest:guest@127.0.0.1:5672//", &queue, &host, None);
    heard
        .next(&host, STARTUP, "worker-online", kind(BeatKind::Online))
        .await;
    heard
        .next(&host, BEATS, "an idle heartbeat", heartbeat_with(0))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_redis_other_db_and_keyprefix_are_told_apart() {
    let port = redis_port();
    let prefix = "wpa-ev:";
    let mut right = listen(source(&format!(
        "redis://127.0.0.1:{port}/{DB}/any?prefix=wpa-ev%3A"
    )))
    .await;
    let mut wrong_db = listen(source(&format!(
        "redis://127.0.0.1:{port}/0/any?prefix=wpa-ev%3A"
    )))
    .await;
    let mut no_prefix = listen(source(&format!("redis://127.0.0.1:{port}/{DB}/any"))).await;

    let host = worker_lifecycle(
        &mut right,
        &format!("redis://127.0.0.1:{port}/{DB}"),
        Some(prefix),
    )
    .await;

    // The worker has gone; what the other listeners buffered meanwhile is all they will
    // ever have of it: nothing.
    for (name, other) in [("db 0", &mut wrong_db), ("no prefix", &mut no_prefix)] {
        while let Ok(beat) = other.beats.try_recv() {
            assert_ne!(beat.hostname, host, "the {name} listener heard {beat:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_redis_listener_resubscribes_after_client_kill() {
    // A private server: CLIENT KILL TYPE pubsub must not cut other tests' listeners.
    let server = RedisServer::start(&[]);
    let broker = format!("redis://127.0.0.1:{}/0", server.port);
    let mut heard = listen(source(&format!("{broker}/any"))).await;
    let queue = unique("wpa-ev");
    let host = format!("celery@{}", unique("wpa-test"));
    let _worker = CeleryWorker::with_events(&broker, &queue, &host, None);
    heard
        .next(&host, STARTUP, "a heartbeat", heartbeat_with(0))
        .await;

    let mut admin = redis::Client::open(broker.as_str())
        .and_then(|c| c.get_connection())
        .expect("admin connection");
    let killed: i64 = redis::cmd("CLIENT")
        .arg(&["KILL", "TYPE", "pubsub"])
        .query(&mut admin)
        .expect("CLIENT KILL");
    assert!(killed >= 1, "no pub/sub client was killed");

    wait_subscribed(&heard.handle, 2).await;
    // Drop what was buffered before the kill; heartbeats must keep coming after it.
    while heard.beats.try_recv().is_ok() {}
    heard
        .next(
            &host,
            BEATS,
            "a heartbeat after reconnecting",
            heartbeat_with(0),
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_rabbitmq_listener_reconnects_after_its_connection_is_closed() {
    let vhost = unique("wpa-ev");
    create_vhost(&vhost).await;
    let mut heard = listen(source(&format!(
        "amqp://guest:guest@127.0.0.1:5672/{vhost}/q"
    )))
    .await;
    // Only the listener is connected to this fresh vhost; the management API lists a new
    // connection after a moment.
    support::brokers::eventually(
        BEATS,
        "the listener's connection to be closed",
        async || (close_connections(&vhost).await > 0).then_some(()),
    )
    .await;
    wait_subscribed(&heard.handle, 2).await;

    let queue = unique("wpa-ev");
    let host = format!("celery@{}", unique("wpa-test"));
    let worker = CeleryWorker::with_events(
        &format!("amqp://guest:guest@127.0.0.1:5672/{vhost}"),
        &queue,
        &host,
        None,
    );
    heard
        .next(&host, STARTUP, "worker-online", kind(BeatKind::Online))
        .await;
    heard
        .next(&host, BEATS, "a heartbeat", heartbeat_with(0))
        .await;
    drop(worker);
    heard.handle.stop().await;
    delete_vhost(&vhost).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_redis_wrong_password_is_denied_without_showing_it() {
    let password = unique("pw");
    let server = RedisServer::start(&["--requirepass", &password]);
    let uri = format!("redis://:wrong-{password}@127.0.0.1:{}/0/any", server.port);
    let (tx, _beats) = mpsc::channel(8);
    let listener = Listener::new(source(&uri), tx, settings());
    let error = listener.listen_once().await.expect_err("wrong password");
    assert!(matches!(error, ListenError::Denied { .. }), "{error:?}");
    let shown = format!("{error} {error:?}");
    assert!(!shown.contains(&password), "{shown}");

    // With the right one it subscribes.
    let uri = format!("redis://:{password}@127.0.0.1:{}/0/any", server.port);
    let heard = listen(source(&uri)).await;
    heard.handle.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_listener_stops_when_its_receiver_is_dropped() {
    let port = redis_port();
    let (tx, beats) = mpsc::channel(8);
    let listener = Listener::new(
        source(&format!("redis://127.0.0.1:{port}/0/any")),
        tx,
        settings(),
    );
    let mut subscriptions = listener.subscriptions();
    let run = tokio::spawn(listener.run(std::future::pending()));
    subscriptions
        .wait_for(|n| *n >= 1)
        .await
        .expect("subscribed");
    drop(beats);
    tokio::time::timeout(Duration::from_secs(5), run)
        .await
        .expect("the listener stops without a receiver")
        .expect("no panic");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_supervisor_retries_an_unreachable_broker_until_stopped() {
    let port = support::brokers::free_port();
    let (tx, _beats) = mpsc::channel(8);
    let handle = Running::start(Listener::new(
        source(&format!("redis://127.0.0.1:{port}/0/any")),
        tx,
        settings(),
    ));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(*handle.subscriptions().borrow(), 0);
    tokio::time::timeout(Duration::from_secs(5), handle.stop())
        .await
        .expect("stops promptly while backing off");
}
