//! Draining real Sidekiq 6.4 processes (Debian's `ruby-sidekiq`) the way the controller
//! does: `TSTP` on the process's signal list, found by its pod (`info.hostname`), and the
//! process hash read back for what it still holds.

use crate::support;

use std::time::{Duration, Instant};

use redis::Commands;
use support::brokers::{redis_conn, redis_port, unique};
use support::closed_loop::tally::unix_now;
use support::drain::until_holding;
use support::framework_loop::JobRun;
use support::sidekiq::{self as sk, DB, SidekiqProcess, queue_uri};
use wpa::queue::{Credentials, QueueUri};
use wpa::workers::drain::{DrainError, DrainVia, Mailbox, SidekiqQuiet};

fn mailbox(queue: &str) -> Mailbox {
    let QueueUri::Sidekiq(uri) = QueueUri::parse(&queue_uri(queue, "")).expect("URI") else {
        panic!("a Sidekiq URI");
    };
    let quiet = SidekiqQuiet::of(&uri, &Credentials::default());
    Mailbox::new(DrainVia::Sidekiq(quiet), Duration::from_secs(5))
}

fn queue_length(queue: &str) -> u64 {
    let mut conn = redis_conn(redis_port(), DB);
    conn.llen(format!("queue:{queue}")).expect("LLEN")
}

#[tokio::test(flavor = "multi_thread")]
async fn sidekiq_drain_lets_the_running_job_finish_and_takes_no_new_one() {
    let queue = unique("sk-drain");
    let ledger = unique("sk-drain-ledger");
    let pod = unique("sk-drain-pod");
    let other_pod = unique("sk-drain-other");
    let log = std::env::temp_dir().join(format!("{pod}.log"));
    let other_log = std::env::temp_dir().join(format!("{other_pod}.log"));
    let mut victim = SidekiqProcess::start(&[&queue], 1, &pod, &log);
    // Another process of another pod on the same queue: it must not be quieted.
    let mut other = SidekiqProcess::start(&[&queue], 1, &other_pod, &other_log);
    let mailbox = mailbox(&queue);
    let queues = vec![queue.clone()];

    let first = until_holding(
        &mailbox,
        &pod,
        Duration::from_secs(30),
        "the process",
        |h| h.consuming == queues,
    )
    .await;
    assert_eq!(first.active, 0, "{first:?}");
    until_holding(
        &mailbox,
        &other_pod,
        Duration::from_secs(30),
        "the other",
        |h| h.consuming == queues,
    )
    .await;
    // Stop the other process taking jobs meanwhile by giving it a long one first.
    let ids = sk::push(&queue, &ledger, &[25.0, 25.0]);
    let running = until_holding(
        &mailbox,
        &pod,
        Duration::from_secs(15),
        "a running job",
        |h| h.active == 1,
    )
    .await;
    assert!(!running.drained(&queues));

    // The drain: quiet the victim's pod only, while its job runs.
    let cancelled_at = unix_now();
    mailbox
        .cancel(std::slice::from_ref(&pod), &queues)
        .await
        .expect("TSTP sent");
    // (The client numbers each push's jobs from 0: the late job is told by its start
    // time, after the cancel.)
    sk::push(&queue, &ledger, &[0.2]);
    let started_late = |r: &JobRun| r.event == "start" && r.at > cancelled_at;
    // Quiet within a beat or two (5 s each in 6.x); busy until its 25 s job ends.
    let quiet = until_holding(&mailbox, &pod, Duration::from_secs(15), "quiet", |h| {
        h.consuming.is_empty()
    })
    .await;
    let sent = Instant::now();
    assert_eq!(
        quiet.active, 1,
        "quiet but still running its job: {quiet:?}"
    );
    assert!(!quiet.drained(&queues), "running a job is not drained");
    until_holding(&mailbox, &pod, Duration::from_secs(30), "drained", |h| {
        h.drained(&queues)
    })
    .await;
    let runs = sk::ledger(&ledger);
    let finished: Vec<&str> = runs
        .iter()
        .filter(|r| r.event == "finish")
        .map(|r| r.job.as_str())
        .collect();
    assert!(
        ids.iter().all(|id| finished.contains(&id.as_str())),
        "both long jobs ran to the end: {runs:?}"
    );
    // The job sent after the drain started: not on the quiet pod. The other pod is busy
    // with its own long job until about now, so the job may still wait; it never runs on
    // the victim.
    assert!(
        runs.iter().all(|r| !(started_late(r) && r.pod == pod)),
        "the quiet pod took a job after the drain: {runs:?}"
    );
    tokio::time::sleep(Duration::from_secs(6).saturating_sub(sent.elapsed())).await;
    let other_holding = until_holding(
        &mailbox,
        &other_pod,
        Duration::from_secs(5),
        "other",
        |_| true,
    )
    .await;
    assert_eq!(
        other_holding.consuming, queues,
        "the other pod's process was not told to stop"
    );
    // Sidekiq has no way to take work again: resume says so rather than pretend.
    let resumed = mailbox.resume(std::slice::from_ref(&pod), &queues).await;
    assert!(
        matches!(resumed, Err(DrainError::Irreversible { .. })),
        "{resumed:?}"
    );
    // The late job runs on the other pod, never on the victim.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !sk::ledger(&ledger).iter().any(&started_late) {
        assert!(
            Instant::now() < deadline,
            "the late job never ran: {:?}",
            sk::ledger(&ledger)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let late_run = sk::ledger(&ledger)
        .into_iter()
        .find(|r| started_late(r))
        .expect("ran");
    assert_eq!(late_run.pod, other_pod, "{late_run:?}");
    assert_eq!(queue_length(&queue), 0);

    victim.terminate();
    other.terminate();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(victim.exited() && other.exited()) {
        assert!(
            Instant::now() < deadline,
            "sidekiq did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    sk::delete(&[format!("queue:{queue}"), ledger]);
    let _ = std::fs::remove_file(log);
    let _ = std::fs::remove_file(other_log);
}

#[tokio::test]
async fn sidekiq_drain_of_a_pod_without_process_is_unknown_not_drained() {
    let queue = unique("sk-drain-none");
    let mailbox = mailbox(&queue);
    let pods = vec![unique("sk-no-such-pod")];
    // Quieting nothing sends nothing; asking finds nothing (never drained on a guess).
    mailbox
        .cancel(&pods, std::slice::from_ref(&queue))
        .await
        .expect("no-op");
    let holdings = mailbox
        .holdings(&pods, Duration::from_secs(2))
        .await
        .expect("asked");
    assert!(holdings.is_empty(), "{holdings:?}");
}

#[tokio::test]
async fn sidekiq_drain_on_a_dead_server_is_an_error_without_password() {
    let uri = "redis+sidekiq://:s3cret@127.0.0.1:1/10/q";
    let QueueUri::Sidekiq(uri) = QueueUri::parse(uri).expect("URI") else {
        panic!("a Sidekiq URI");
    };
    let quiet = SidekiqQuiet::of(&uri, &Credentials::default());
    let mailbox = Mailbox::new(DrainVia::Sidekiq(quiet), Duration::from_secs(2));
    let err = mailbox
        .holdings(&["p".to_string()], Duration::from_secs(1))
        .await
        .expect_err("nothing listens on port 1");
    let text = err.to_string();
    assert!(text.contains("127.0.0.1:1"), "{text}");
    assert!(!text.contains("s3cret"), "{text}");
    assert!(!format!("{mailbox:?}").contains("s3cret"));
}
