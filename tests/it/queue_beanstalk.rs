//! beanstalkd provider against a real beanstalkd (127.0.0.1:11300, see hack/services.sh),
//! private beanstalkd processes, and hand-made misbehaving servers.

use crate::support;

use std::time::{Duration, Instant};

use support::broker_procs::{eventually, start_beanstalkd, unique, wait_for_port};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use wpa::queue::beanstalk::BeanstalkProvider;
use wpa::queue::beanstalk::uri::BeanstalkUri;
use wpa::queue::{ProviderOptions, QueueError, QueueMetrics, QueueProvider};

const SHARED_PORT: u16 = 11300;
const WAIT: Duration = Duration::from_secs(30);

fn uri(port: u16, tube: &str) -> BeanstalkUri {
    BeanstalkUri {
        host: "127.0.0.1".into(),
        port,
        tube: tube.into(),
    }
}

fn opts() -> ProviderOptions {
    ProviderOptions {
        request_timeout: Duration::from_secs(3),
        ..ProviderOptions::default()
    }
}

/// A minimal beanstalkd client for setting up test state.
struct Client {
    conn: BufReader<TcpStream>,
}

impl Client {
    async fn connect(port: u16) -> Self {
        Self {
            conn: BufReader::new(
                TcpStream::connect(("127.0.0.1", port))
                    .await
                    .expect("connect beanstalkd"),
            ),
        }
    }

    async fn line(&mut self) -> String {
        let mut line = String::new();
        self.conn.read_line(&mut line).await.expect("read line");
        line.trim_end().to_string()
    }

    async fn command(&mut self, command: &str) -> String {
        self.conn
            .get_mut()
            .write_all(format!("{command}\r\n").as_bytes())
            .await
            .expect("write");
        self.line().await
    }

    async fn put(&mut self, tube: &str, delay: u32, body: &str) {
        assert_eq!(
            self.command(&format!("use {tube}")).await,
            format!("USING {tube}")
        );
        let put = format!("put 100 {delay} 60 {}\r\n{body}", body.len());
        let answer = self.command(&put).await;
        assert!(answer.starts_with("INSERTED "), "put answered {answer:?}");
    }

    /// Watches only `tube`.
    async fn watch_only(&mut self, tube: &str) {
        assert_eq!(self.command(&format!("watch {tube}")).await, "WATCHING 2");
        assert_eq!(self.command("ignore default").await, "WATCHING 1");
    }

    /// Reserves one ready job without waiting; returns its id.
    async fn reserve_now(&mut self) -> String {
        let answer = self.command("reserve-with-timeout 0").await;
        let mut parts = answer.split(' ');
        assert_eq!(
            parts.next(),
            Some("RESERVED"),
            "reserve answered {answer:?}"
        );
        let id = parts.next().expect("job id").to_string();
        let size: usize = parts.next().expect("size").parse().expect("numeric size");
        let mut body = vec![0u8; size + 2];
        self.conn.read_exact(&mut body).await.expect("job body");
        id
    }
}

#[tokio::test]
async fn counts_ready_reserved_delayed_and_watchers() {
    let tube = unique("wpa-counts");
    let mut producer = Client::connect(SHARED_PORT).await;
    for i in 0..5 {
        producer.put(&tube, 0, &format!("job {i}")).await;
    }
    producer.put(&tube, 600, "later").await;
    let mut worker = Client::connect(SHARED_PORT).await;
    worker.watch_only(&tube).await;
    worker.reserve_now().await;
    worker.reserve_now().await;

    let mut provider = BeanstalkProvider::connect(&uri(SHARED_PORT, &tube), &opts())
        .await
        .unwrap();
    let m = provider.poll().await.unwrap();
    assert_eq!(m.visible, 3);
    assert_eq!(m.in_flight, Some(2));
    assert_eq!(m.delayed, Some(1));
    assert_eq!(m.consumers, Some(1));
    assert_eq!(m.idle, Some(false));
    assert_eq!(m.sent_per_minute, None);
}

#[tokio::test]
async fn idle_when_every_watcher_waits_for_a_job() {
    let tube = unique("wpa-idle");
    let mut producer = Client::connect(SHARED_PORT).await;
    producer.put(&tube, 0, "one").await;
    let mut worker = Client::connect(SHARED_PORT).await;
    worker.watch_only(&tube).await;
    let id = worker.reserve_now().await;

    let mut provider = BeanstalkProvider::connect(&uri(SHARED_PORT, &tube), &opts())
        .await
        .unwrap();
    let busy = provider.poll().await.unwrap();
    assert_eq!(
        (busy.visible, busy.in_flight, busy.idle),
        (0, Some(1), Some(false))
    );

    // The worker finishes and blocks in `reserve`: the tube is idle.
    assert_eq!(worker.command(&format!("delete {id}")).await, "DELETED");
    worker
        .conn
        .get_mut()
        .write_all(b"reserve\r\n")
        .await
        .unwrap();
    let m = eventually(WAIT, "the waiting worker to show", async || {
        let m = provider.poll().await.unwrap();
        (m.idle == Some(true)).then_some(m)
    })
    .await;
    assert_eq!((m.visible, m.in_flight, m.consumers), (0, Some(0), Some(1)));

    // A new job wakes it: no longer idle.
    producer.put(&tube, 0, "two").await;
    assert!(worker.line().await.starts_with("RESERVED "));
    let m = provider.poll().await.unwrap();
    assert_eq!((m.in_flight, m.idle), (Some(1), Some(false)));
}

/// What beanstalkd says of `tube` itself (not through the provider).
async fn tube_exists(client: &mut Client, tube: &str) -> bool {
    let answer = client.command(&format!("stats-tube {tube}")).await;
    if answer == "NOT_FOUND" {
        return false;
    }
    let size: usize = answer
        .strip_prefix("OK ")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("stats-tube answered {answer:?}"));
    let mut body = vec![0u8; size + 2];
    client.conn.read_exact(&mut body).await.expect("stats body");
    true
}

fn assert_empty_and_idle(m: &QueueMetrics, what: &str) {
    assert_eq!(
        (m.visible, m.in_flight, m.delayed, m.consumers, m.idle),
        (0, Some(0), Some(0), Some(0), Some(true)),
        "{what}"
    );
}

#[tokio::test]
async fn a_tube_that_was_never_used_is_an_empty_tube() {
    let tube = unique("wpa-never-used");
    let mut observer = Client::connect(SHARED_PORT).await;
    let mut provider = BeanstalkProvider::connect(&uri(SHARED_PORT, &tube), &opts())
        .await
        .unwrap();
    // The provider's own stats-tube must not bring the tube into existence.
    for _ in 0..3 {
        let m = provider
            .poll()
            .await
            .expect("a missing tube is data, not an error");
        assert_empty_and_idle(&m, "never used");
    }
    assert!(!tube_exists(&mut observer, &tube).await);

    let mut producer = Client::connect(SHARED_PORT).await;
    producer.put(&tube, 0, "first").await;
    let m = provider.poll().await.unwrap();
    assert_eq!((m.visible, m.idle), (1, Some(false)));
}

#[tokio::test]
async fn a_tube_that_disappears_reads_empty_and_comes_back() {
    let tube = unique("wpa-comes-and-goes");
    let mut observer = Client::connect(SHARED_PORT).await;
    let mut provider = BeanstalkProvider::connect(&uri(SHARED_PORT, &tube), &opts())
        .await
        .unwrap();

    // A producer puts a job, a worker watches the tube, reserves the job and deletes it.
    let mut producer = Client::connect(SHARED_PORT).await;
    producer.put(&tube, 0, "job").await;
    let mut worker = Client::connect(SHARED_PORT).await;
    worker.watch_only(&tube).await;
    let id = worker.reserve_now().await;
    let m = provider.poll().await.unwrap();
    assert_eq!((m.visible, m.in_flight, m.consumers), (0, Some(1), Some(1)));
    assert_eq!(worker.command(&format!("delete {id}")).await, "DELETED");

    // The last user and the last watcher go away: beanstalkd forgets the tube.
    drop(producer);
    drop(worker);
    eventually(WAIT, "the tube to disappear", async || {
        (!tube_exists(&mut observer, &tube).await).then_some(())
    })
    .await;
    let m = provider
        .poll()
        .await
        .expect("a vanished tube is data, not an error");
    assert_empty_and_idle(&m, "vanished");

    // It comes back with the next job.
    let mut producer = Client::connect(SHARED_PORT).await;
    producer.put(&tube, 0, "again").await;
    let m = provider.poll().await.unwrap();
    assert_eq!((m.visible, m.in_flight, m.idle), (1, Some(0), Some(false)));
}

#[tokio::test]
async fn invalid_tube_name_is_a_config_error() {
    let err = BeanstalkProvider::connect(&uri(SHARED_PORT, "bad tube\r\nquit"), &opts())
        .await
        .err()
        .unwrap();
    assert!(matches!(err, QueueError::Config(_)), "{err:?}");
}

#[tokio::test]
async fn recovers_after_the_server_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, port) = start_beanstalkd(dir.path());
    wait_for_port(port, WAIT).await;
    let tube = unique("wpa-restart");
    let mut producer = Client::connect(port).await;
    producer.put(&tube, 0, "a").await;
    producer.put(&tube, 0, "b").await;

    let mut provider = BeanstalkProvider::connect(&uri(port, &tube), &opts())
        .await
        .unwrap();
    assert_eq!(provider.poll().await.unwrap().visible, 2);

    server.kill();
    let err = provider.poll().await.unwrap_err();
    assert!(matches!(err, QueueError::Unavailable { .. }), "{err:?}");

    server.restart();
    wait_for_port(port, WAIT).await;
    // beanstalkd keeps jobs in memory: the restarted server starts empty.
    let mut producer = Client::connect(port).await;
    producer.put(&tube, 0, "c").await;
    let m = provider.poll().await.unwrap();
    assert_eq!((m.visible, m.in_flight), (1, Some(0)));
}

#[tokio::test]
async fn unreachable_server_is_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, port) = start_beanstalkd(dir.path());
    server.kill();
    let err = BeanstalkProvider::connect(&uri(port, "default"), &opts())
        .await
        .err()
        .unwrap();
    assert!(matches!(err, QueueError::Unavailable { .. }), "{err:?}");
    drop(dir);
}

/// A server that answers every command line with `reply`, then closes the connection
/// when `close` is set.
async fn fake_server(reply: Vec<u8>, close: bool) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let reply = reply.clone();
            tokio::spawn(async move {
                let mut stream = BufReader::new(stream);
                let mut line = String::new();
                while stream.read_line(&mut line).await.is_ok_and(|n| n > 0) {
                    line.clear();
                    if stream.get_mut().write_all(&reply).await.is_err() || close {
                        break;
                    }
                }
            });
        }
    });
    port
}

async fn bad_response_from(reply: &[u8], close: bool) -> String {
    let port = fake_server(reply.to_vec(), close).await;
    let mut provider = BeanstalkProvider::connect(&uri(port, "jobs"), &opts())
        .await
        .unwrap();
    let started = Instant::now();
    match provider.poll().await {
        Err(QueueError::BadResponse { detail, .. }) => {
            assert!(
                started.elapsed() < Duration::from_secs(3),
                "took {:?}",
                started.elapsed()
            );
            detail
        }
        other => panic!(
            "expected BadResponse for {:?}, got {other:?}",
            String::from_utf8_lossy(reply)
        ),
    }
}

#[tokio::test]
async fn nonsense_is_a_bad_response() {
    bad_response_from(b"HELLO THERE\r\n", false).await;
    bad_response_from(b"OK many\r\n", false).await;
    bad_response_from(b"OK 5\r\nabcdeXY", false).await;
    bad_response_from(b"OK 13\r\nnot yaml at all\r\n", false).await;
    bad_response_from(b"OK 26\r\n---\ncurrent-jobs-ready: -1\r\n", false).await;
    bad_response_from(&[0xff, 0xfe, b'\r', b'\n'], false).await;
}

#[tokio::test]
async fn truncated_frame_is_a_bad_response() {
    let detail = bad_response_from(b"OK 100\r\n---\ncurrent-jobs-ready: 1\n", true).await;
    assert!(detail.contains("truncated"), "{detail}");
    let detail = bad_response_from(b"OK 10", true).await;
    assert!(detail.contains("truncated"), "{detail}");
}

#[tokio::test]
async fn oversize_frames_are_bad_responses() {
    let detail = bad_response_from(b"OK 10000000\r\n", false).await;
    assert!(detail.contains("limit"), "{detail}");
    let long_line = vec![b'x'; 10_000];
    let detail = bad_response_from(&long_line, false).await;
    assert!(detail.contains("longer"), "{detail}");
}

#[tokio::test]
async fn silent_server_times_out_as_unavailable() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let opts = ProviderOptions {
        request_timeout: Duration::from_millis(500),
        ..ProviderOptions::default()
    };
    let mut provider = BeanstalkProvider::connect(&uri(port, "jobs"), &opts)
        .await
        .unwrap();
    let err = provider.poll().await.unwrap_err();
    assert!(matches!(err, QueueError::Unavailable { .. }), "{err:?}");
    holder.abort();
}

/// A server statistic from beanstalkd's `stats` (e.g. `current-connections`).
async fn server_stat(client: &mut Client, key: &str) -> u64 {
    let answer = client.command("stats").await;
    let size: usize = answer
        .strip_prefix("OK ")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("stats answered {answer:?}"));
    let mut body = vec![0u8; size + 2];
    client.conn.read_exact(&mut body).await.expect("stats body");
    let body = String::from_utf8(body).expect("UTF-8 stats");
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}: ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("stats lacks {key}"))
}

/// Puts `i` ready jobs into tube `{prefix}-{i}` for every `i < count` (tube 0 stays
/// unused).
async fn fill_tubes(port: u16, prefix: &str, count: usize) {
    let mut producer = Client::connect(port).await;
    for i in 0..count {
        for j in 0..i {
            producer
                .put(&format!("{prefix}-{i}"), 0, &format!("job {j}"))
                .await;
        }
    }
}

/// `count` providers on `port`, tube `i` holding `i` ready jobs (tube 0 was never used).
async fn tubes_with_distinct_counts(
    port: u16,
    count: usize,
    opts: &ProviderOptions,
) -> (String, Vec<(usize, BeanstalkProvider)>) {
    let prefix = unique("wpa-shared");
    fill_tubes(port, &prefix, count).await;
    let mut providers = Vec::new();
    for i in 0..count {
        let provider = BeanstalkProvider::connect(&uri(port, &format!("{prefix}-{i}")), opts)
            .await
            .unwrap();
        providers.push((i, provider));
    }
    (prefix, providers)
}

/// Polls every provider at once and checks each got its own tube's count.
async fn poll_all_and_check(providers: &mut [(usize, BeanstalkProvider)]) {
    let results = futures::future::join_all(
        providers
            .iter_mut()
            .map(|(i, p)| async move { (*i, p.poll().await) }),
    )
    .await;
    for (i, result) in results {
        let m = result.unwrap_or_else(|e| panic!("tube {i}: {e}"));
        assert_eq!(m.visible, i as u64, "tube {i} got another tube's reply");
        assert_eq!(m.idle, Some(i == 0), "tube {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tubes_on_one_server_share_one_pipelined_connection() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, port) = start_beanstalkd(dir.path());
    wait_for_port(port, WAIT).await;
    let mut observer = Client::connect(port).await;
    let opts = opts();
    let (_, mut providers) = tubes_with_distinct_counts(port, 60, &opts).await;
    assert_eq!(opts.beanstalk_connections.live(), 1);
    // The observer, the producer is gone; plus our one shared connection.
    eventually(WAIT, "one connection of ours", async || {
        (server_stat(&mut observer, "current-connections").await == 2).then_some(())
    })
    .await;
    let opened = server_stat(&mut observer, "total-connections").await;

    for _ in 0..5 {
        poll_all_and_check(&mut providers).await;
    }
    // Polls given up half-way leave their replies in the pipeline: later ones must not
    // get them.
    for (_, p) in providers.iter_mut().step_by(2) {
        let _ = tokio::time::timeout(Duration::from_micros(1), p.poll()).await;
    }
    poll_all_and_check(&mut providers).await;
    assert_eq!(server_stat(&mut observer, "current-connections").await, 2);
    // No connection was opened for all these polls.
    assert_eq!(
        server_stat(&mut observer, "total-connections").await,
        opened
    );

    // The last provider closes the connection.
    providers.truncate(1);
    assert_eq!(opts.beanstalk_connections.live(), 1);
    providers.clear();
    assert_eq!(opts.beanstalk_connections.live(), 0);
    eventually(WAIT, "our connection to close", async || {
        (server_stat(&mut observer, "current-connections").await == 1).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_our_one_connection_is_subtracted_from_the_default_tubes_watchers() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, port) = start_beanstalkd(dir.path());
    wait_for_port(port, WAIT).await;
    let opts = opts();
    let (_, mut others) = tubes_with_distinct_counts(port, 10, &opts).await;
    poll_all_and_check(&mut others).await;
    let mut default = BeanstalkProvider::connect(&uri(port, "default"), &opts)
        .await
        .unwrap();
    // Eleven providers, one connection: once the producer's connection is gone, nobody
    // else watches "default" (one connection per provider would leave 10 watchers).
    let m = eventually(WAIT, "only our connection to watch default", async || {
        let m = default.poll().await.unwrap();
        (m.consumers == Some(0)).then_some(m)
    })
    .await;
    assert_eq!(m.idle, Some(true));
    // Every other connection watches it (beanstalkd's rule), a worker's included.
    let _worker = Client::connect(port).await;
    let m = eventually(WAIT, "the worker to watch default", async || {
        let m = default.poll().await.unwrap();
        (m.consumers == Some(1)).then_some(m)
    })
    .await;
    assert_eq!(m.idle, Some(false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_tubes_recover_together_after_the_server_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, port) = start_beanstalkd(dir.path());
    wait_for_port(port, WAIT).await;
    let opts = opts();
    let (prefix, mut providers) = tubes_with_distinct_counts(port, 20, &opts).await;
    poll_all_and_check(&mut providers).await;

    // Killed while the connection is idle, restarted before the next poll: that poll
    // already succeeds (no failed round first), on one new connection.
    server.kill();
    server.restart();
    wait_for_port(port, WAIT).await;
    // beanstalkd keeps jobs in memory: refill the restarted server.
    fill_tubes(port, &prefix, 20).await;
    poll_all_and_check(&mut providers).await;
    let mut observer = Client::connect(port).await;
    assert_eq!(opts.beanstalk_connections.live(), 1);
    // Ours and the observer (the producer's is on its way out).
    eventually(WAIT, "one connection of ours", async || {
        (server_stat(&mut observer, "current-connections").await == 2).then_some(())
    })
    .await;

    // Down: every poll fails as unavailable, in time; back up: every poll succeeds.
    drop(observer);
    server.kill();
    let started = Instant::now();
    let results = futures::future::join_all(providers.iter_mut().map(|(_, p)| p.poll())).await;
    // Bounded by the timeouts, not hanging: a request may still go out on the old socket
    // before the kill has closed it and wait the whole request timeout, then the retry's
    // connect is refused (slack for a loaded machine on top).
    let bound = opts.request_timeout * 2 + Duration::from_secs(2);
    assert!(
        started.elapsed() < bound,
        "{:?} (bound {bound:?})",
        started.elapsed()
    );
    for result in results {
        let err = result.unwrap_err();
        assert!(matches!(err, QueueError::Unavailable { .. }), "{err:?}");
    }
    server.restart();
    wait_for_port(port, WAIT).await;
    let results = futures::future::join_all(providers.iter_mut().map(|(_, p)| p.poll())).await;
    for result in results {
        // Nothing was put into the restarted server: every tube reads empty.
        assert_empty_and_idle(&result.unwrap(), "after the restart");
    }
    let mut observer = Client::connect(port).await;
    assert_eq!(server_stat(&mut observer, "current-connections").await, 2);
    assert_eq!(opts.beanstalk_connections.live(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_stops_answering_fails_every_pending_poll_in_time() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            held.push(stream);
        }
    });
    let timeout = Duration::from_millis(500);
    let opts = ProviderOptions {
        request_timeout: timeout,
        ..ProviderOptions::default()
    };
    let mut providers = Vec::new();
    for i in 0..20 {
        let tube = format!("jobs-{i}");
        providers.push(
            BeanstalkProvider::connect(&uri(port, &tube), &opts)
                .await
                .unwrap(),
        );
    }
    // Twenty providers, one connection.
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
    for round in 1..=3 {
        let started = Instant::now();
        let results = futures::future::join_all(providers.iter_mut().map(|p| p.poll())).await;
        let took = started.elapsed();
        // One timeout for all twenty, not one after another (that would be 10 s); slack
        // for a loaded machine.
        assert!(
            took >= timeout && took < timeout + Duration::from_secs(3),
            "round {round}: {took:?}"
        );
        for result in results {
            match result {
                Err(QueueError::Unavailable { detail, .. }) => {
                    assert!(detail.contains("within"), "{detail}")
                }
                other => panic!("round {round}: expected Unavailable, got {other:?}"),
            }
        }
        // The hung connection was discarded: the next round opens one new connection.
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), round);
    }
    holder.abort();
}
