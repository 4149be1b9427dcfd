//! Unit tests of the registry: loop sharing, intervals, wake-ups, bookkeeping.

use super::*;
use crate::queue::{Credentials, QueueUri};

use crate::queue::test_support::sample;

#[test]
fn signature_tracks_what_subscribers_care_about() {
    let empty = QueueState::default();
    let s0 = Signature::of(&empty, 10);
    assert!(!s0.polled);
    let mut st = QueueState {
        metrics: Some(sample(0, Some(0), None)),
        ..QueueState::default()
    };
    let zero = Signature::of(&st, 10);
    assert!(zero.polled && !zero.has_backlog && zero.workers == 0);
    st.metrics = Some(sample(5, Some(4), None));
    let nine = Signature::of(&st, 10);
    assert_eq!((nine.has_backlog, nine.workers), (true, 1));
    st.metrics = Some(sample(10, None, None));
    // Same worker count: no change worth a wakeup.
    assert_eq!(Signature::of(&st, 10), nine);
    st.metrics = Some(sample(11, None, None));
    assert_eq!(Signature::of(&st, 10).workers, 2);
    // A target of 0 is treated as 1 rather than dividing by zero.
    assert_eq!(Signature::of(&st, 0).workers, 11);
    st.stale = true;
    st.error = Some(QueueError::NotFound { queue: "q".into() });
    let failing = Signature::of(&st, 10);
    assert!(failing.stale && failing.failing);
}

fn loop_key(input: &str) -> LoopKey {
    LoopKey::new(
        QueueUri::parse(input).expect("queueURI"),
        Credentials::default(),
    )
}

#[test]
fn attach_shares_one_loop_per_queue_and_moves_subscribers_without_spawning() {
    let settings = PollSettings::default();
    let mut state = State::default();
    let mut ids = 0..;
    let mut next = || ids.next().expect("ids");
    let a = loop_key("redis://h/0/a");
    let b = loop_key("redis://h/0/b");

    let first = state.attach("ns/one", vec![a.clone()], None, 5, &settings, &mut next);
    let [start] = <[LoopStart; 1]>::try_from(first.starts)
        .ok()
        .expect("the first subscriber registers a loop");
    assert_eq!((start.key.clone(), start.id), (a.clone(), 0));
    assert!(!first.wake, "nothing polled yet");
    assert!(state.loops[&a].task.is_none(), "attach spawns nothing");

    let second = state.attach("ns/two", vec![a.clone()], None, 5, &settings, &mut next);
    assert!(second.starts.is_empty(), "one loop per distinct queue");
    assert_eq!(state.loops[&a].members.len(), 2);

    // Once the queue has been polled, a newcomer is woken at once.
    state.loops.get_mut(&a).expect("loop").status.metrics = Some(sample(3, Some(0), None));
    let third = state.attach("ns/three", vec![a.clone()], None, 5, &settings, &mut next);
    assert!(third.wake && third.starts.is_empty());
    // The same subscription again is not news.
    let again = state.attach("ns/three", vec![a.clone()], None, 5, &settings, &mut next);
    assert!(!again.wake && again.starts.is_empty());

    // Moving every subscriber to another queue stops the old loop.
    for name in ["ns/one", "ns/two", "ns/three"] {
        state.attach(name, vec![b.clone()], None, 5, &settings, &mut next);
    }
    assert!(!state.loops.contains_key(&a));
    assert_eq!(state.loops[&b].id, 1);
    assert_eq!(state.loops[&b].members.len(), 3);
    assert_eq!(state.subscribers.len(), 3);
}

#[test]
fn a_subscriber_on_several_queues_joins_each_loop_and_is_woken_for_the_combined_view() {
    let settings = PollSettings::default();
    let mut state = State::default();
    let mut ids = 0..;
    let mut next = || ids.next().expect("ids");
    let (a, b, c) = (
        loop_key("redis://h/0/a"),
        loop_key("redis://h/0/b"),
        loop_key("redis://h/0/c"),
    );
    state.attach("ns/single", vec![a.clone()], None, 5, &settings, &mut next);
    let multi = state.attach(
        "ns/multi",
        vec![a.clone(), b.clone()],
        None,
        5,
        &settings,
        &mut next,
    );
    let started: Vec<LoopKey> = multi.starts.iter().map(|s| s.key.clone()).collect();
    assert_eq!(started, vec![b.clone()], "queue a already has its loop");
    assert_eq!(state.loops[&a].members.len(), 2);

    // Only one of its queues polled: nothing to wake the multi-queue subscriber for.
    state.loops.get_mut(&a).expect("a").status.metrics = Some(sample(4, Some(0), None));
    let only_a = Signature::of_all(statuses_of(&state.loops, &[a.clone(), b.clone()]), 5);
    assert!(!only_a.polled);
    state.loops.get_mut(&b).expect("b").status.metrics = Some(sample(3, Some(0), None));
    let both = Signature::of_all(statuses_of(&state.loops, &[a.clone(), b.clone()]), 5);
    assert!(both.polled && both.has_backlog);
    assert_eq!(
        both.workers, 2,
        "ceil((4 + 3) / 5): the sum, not each queue"
    );
    let again = state.attach(
        "ns/multi",
        vec![a.clone(), b.clone()],
        None,
        5,
        &settings,
        &mut next,
    );
    assert!(again.wake, "every queue polled now");

    // Moving to [b, c]: leaves a (kept alive by ns/single), keeps b, starts c.
    let moved = state.attach(
        "ns/multi",
        vec![b.clone(), c.clone()],
        None,
        5,
        &settings,
        &mut next,
    );
    let started: Vec<LoopKey> = moved.starts.iter().map(|s| s.key.clone()).collect();
    assert_eq!(started, vec![c.clone()]);
    assert!(!moved.wake, "queue c was never polled");
    assert_eq!(state.loops[&a].members.len(), 1);
    assert!(state.loops[&b].members.contains("ns/multi"));
    assert_eq!(
        state.subscribers["ns/multi"].keys,
        vec![b.clone(), c.clone()]
    );

    // Leaving stops the loops only it watched.
    let entry = state.subscribers.remove("ns/multi").expect("multi");
    for key in &entry.keys {
        detach(&mut state, "ns/multi", key, &settings);
    }
    assert!(state.loops.contains_key(&a));
    assert!(!state.loops.contains_key(&b) && !state.loops.contains_key(&c));
}

#[test]
fn a_loop_has_no_workers_only_when_every_member_reports_zero() {
    let settings = PollSettings::default();
    let mut state = State::default();
    let key = loop_key("redis://h/0/a");
    let mut ids = 0..;
    for name in ["ns/one", "ns/two"] {
        state.attach(name, vec![key.clone()], None, 5, &settings, || {
            ids.next().expect("ids")
        });
    }
    let lp = &state.loops[&key];
    assert!(
        !every_member_at_zero(&state.subscribers, lp),
        "replicas unknown"
    );
    state.subscribers.get_mut("ns/one").expect("one").workers = Some(0);
    assert!(!every_member_at_zero(
        &state.subscribers,
        &state.loops[&key]
    ));
    state.subscribers.get_mut("ns/two").expect("two").workers = Some(0);
    assert!(every_member_at_zero(&state.subscribers, &state.loops[&key]));
    // The member with workers leaves: the rest is at zero.
    state.subscribers.get_mut("ns/two").expect("two").workers = Some(2);
    state.subscribers.remove("ns/two");
    detach(&mut state, "ns/two", &key, &settings);
    assert!(state.loops[&key].control.no_workers());
    state.subscribers.remove("ns/one");
    detach(&mut state, "ns/one", &key, &settings);
    assert!(
        !state.loops.contains_key(&key),
        "the last member stops the loop"
    );
}

#[test]
fn a_loop_polls_at_the_shortest_interval_its_members_ask_for() {
    let settings = PollSettings::default();
    let mut state = State::default();
    let (key, other) = (
        loop_key("beanstalk://h:11300/a"),
        loop_key("beanstalk://h:11300/b"),
    );
    let mut ids = 0..;
    let mut join = |state: &mut State, name: &str, key: &LoopKey, seconds: Option<u64>| {
        let interval = seconds.map(Duration::from_secs);
        let ids = &mut ids;
        state.attach(name, vec![key.clone()], interval, 5, &settings, || {
            ids.next().expect("ids")
        });
    };
    let secs = Duration::from_secs;
    join(&mut state, "ns/slow", &key, Some(5));
    assert_eq!(state.loops[&key].interval, secs(5));
    join(&mut state, "ns/fast", &key, Some(2));
    assert_eq!(state.loops[&key].interval, secs(2));
    // The same queue, a new interval: the loop follows.
    join(&mut state, "ns/fast", &key, Some(3));
    assert_eq!(state.loops[&key].interval, secs(3));
    // The member that asked for it leaves: back to the other one's.
    state.subscribers.remove("ns/fast");
    detach(&mut state, "ns/fast", &key, &settings);
    assert_eq!(state.loops[&key].interval, secs(5));
    // A member without an interval of its own gets the kind's default (1 s here).
    join(&mut state, "ns/default", &key, None);
    assert_eq!(state.loops[&key].interval, secs(1));
    // Moving to another queue: the old loop is back at 5 s, the new one at 1 s.
    join(&mut state, "ns/default", &other, None);
    assert_eq!(state.loops[&key].interval, secs(5));
    assert_eq!(state.loops[&other].interval, secs(1));
}

#[test]
fn registry_can_be_shared_across_tasks() {
    fn shareable<T: Send + Sync + Clone + 'static>() {}
    shareable::<Registry>();
    fn send<T: Send>(_: &T) {}
    let registry = Registry::new(PollSettings::default(), ProviderOptions::default());
    send(&registry.shutdown());
}

#[test]
fn default_intervals_follow_practo() {
    let s = PollSettings::default();
    assert_eq!(
        s.default_interval(ProviderKind::Sqs),
        Duration::from_secs(20)
    );
    // practo: 20 s; stats-tube is one cheap round trip, so 1 s (issue 10).
    assert_eq!(
        s.default_interval(ProviderKind::Beanstalkd),
        Duration::from_secs(1)
    );
    assert_eq!(
        s.default_interval(ProviderKind::Redis),
        Duration::from_secs(1)
    );
    assert_eq!(
        s.default_interval(ProviderKind::Rabbitmq),
        Duration::from_secs(1)
    );
    assert_eq!(
        s.default_interval(ProviderKind::Http),
        Duration::from_secs(1)
    );
    assert_eq!(s.max_backoff, Duration::from_secs(30));
    let s = s.with_interval(ProviderKind::Sqs, Duration::from_secs(5));
    assert_eq!(
        s.default_interval(ProviderKind::Sqs),
        Duration::from_secs(5)
    );
    assert_eq!(
        s.default_interval(ProviderKind::Redis),
        Duration::from_secs(1)
    );
}

#[test]
fn subscribe_rejects_bad_configuration_without_a_runtime_panic() {
    let registry = Registry::new(PollSettings::default(), ProviderOptions::default());
    let uri = QueueUri::parse("redis://127.0.0.1/1/q").unwrap();
    let spec = |target, interval| Subscription {
        queues: vec![uri.clone()],
        credentials: Credentials::default(),
        poll_interval: interval,
        target_messages_per_worker: target,
    };
    assert!(matches!(
        registry.subscribe("a/b", spec(0, None)),
        Err(QueueError::Config(_))
    ));
    assert!(matches!(
        registry.subscribe("a/b", spec(1, Some(Duration::ZERO))),
        Err(QueueError::Config(_))
    ));
    // Outside a runtime: an error, not a panic.
    assert!(matches!(
        registry.subscribe("a/b", spec(1, None)),
        Err(QueueError::Config(_))
    ));
    assert_eq!(registry.active_loops(), 0);
    assert_eq!(registry.state("a/b"), None);
}
