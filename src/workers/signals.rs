//! One event listener per broker, shared by every WPA whose queues live there, started with
//! the first such WPA and stopped with the last. Each listener's beats fill a
//! [`WorkerTable`]; a WPA reads the workers of its brokers from here.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use jiff::Timestamp;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::sync::lock;

use super::table::{WorkerSeen, WorkerTable};
use super::{EventSource, WorkerBeat};

/// How long after a listener connects its silence says nothing yet: Celery's workers send
/// a heartbeat every 2 s, so by then every live worker was heard from at least twice.
pub const WARM_UP: Duration = Duration::from_secs(5);
/// Beats waiting to be put into a table; a listener waits when they pile up.
const BEAT_BUFFER: usize = 1024;

/// Where a listener stands, as it reports it.
#[derive(Debug, Clone, PartialEq)]
pub enum LinkState {
    Connecting,
    /// Subscribed since then.
    Listening(Timestamp),
    /// The last attempt failed (password-free message); the listener retries.
    Failed(String),
}

/// Runs one broker's listener until the token is cancelled: sends its beats and reports its
/// state. Reconnecting with backoff is its own business.
pub type Listen = Arc<
    dyn Fn(
            EventSource,
            mpsc::Sender<WorkerBeat>,
            Arc<dyn Fn(LinkState) + Send + Sync>,
            CancellationToken,
        ) -> BoxFuture<'static, ()>
        + Send
        + Sync,
>;

/// What a WPA can learn from its brokers' workers now.
#[derive(Debug, Clone, PartialEq)]
pub enum SignalView {
    /// Some listener has not listened for [`WARM_UP`] yet: silence means nothing.
    Starting,
    /// Some listener cannot read its broker's events.
    Failing(String),
    /// Every listener is live: the workers they heard from (all brokers together).
    Live(Vec<WorkerSeen>),
}

struct Source {
    table: Arc<Mutex<WorkerTable>>,
    link: Arc<Mutex<LinkState>>,
    members: HashSet<String>,
    stop: CancellationToken,
}

#[derive(Default)]
struct Inner {
    sources: HashMap<EventSource, Source>,
    /// Each WPA's brokers.
    members: HashMap<String, Vec<EventSource>>,
}

/// The listeners, by broker.
#[derive(Clone)]
pub struct WorkerSignals {
    inner: Arc<Mutex<Inner>>,
    listen: Listen,
}

impl WorkerSignals {
    pub fn new(listen: Listen) -> Self {
        Self {
            inner: Arc::default(),
            listen,
        }
    }

    /// Makes `sources` the brokers of WPA `id` (an empty list: none), starting listeners
    /// that are new and stopping those no WPA needs any more. Needs a Tokio runtime.
    pub fn attach(&self, id: &str, sources: Vec<EventSource>) {
        let mut inner = lock(&self.inner);
        let old = inner.members.remove(id).unwrap_or_default();
        for source in old.iter().filter(|s| !sources.contains(s)) {
            leave(&mut inner, id, source);
        }
        for source in &sources {
            let entry = inner
                .sources
                .entry(source.clone())
                .or_insert_with(|| self.start(source.clone()));
            entry.members.insert(id.to_string());
        }
        if !sources.is_empty() {
            inner.members.insert(id.to_string(), sources);
        }
    }

    pub fn detach(&self, id: &str) {
        self.attach(id, Vec::new());
    }

    /// The workers WPA `id`'s brokers report at `now`; `None` when it has no broker with
    /// worker events.
    pub fn view(&self, id: &str, now: Timestamp) -> Option<SignalView> {
        let inner = lock(&self.inner);
        let sources = inner.members.get(id)?;
        let mut workers = Vec::new();
        for source in sources {
            let Some(entry) = inner.sources.get(source) else {
                continue;
            };
            match &*lock(&entry.link) {
                LinkState::Connecting => return Some(SignalView::Starting),
                LinkState::Failed(message) => return Some(SignalView::Failing(message.clone())),
                LinkState::Listening(since) => {
                    let warm_up = jiff::SignedDuration::try_from(WARM_UP)
                        .unwrap_or(jiff::SignedDuration::ZERO);
                    if now.duration_since(*since) < warm_up {
                        return Some(SignalView::Starting);
                    }
                }
            }
            workers.extend(lock(&entry.table).seen(now));
        }
        Some(SignalView::Live(workers))
    }

    /// Listeners running now.
    pub fn listeners(&self) -> usize {
        lock(&self.inner).sources.len()
    }

    /// Stops every listener.
    pub fn shutdown(&self) {
        let mut inner = lock(&self.inner);
        for (_, source) in inner.sources.drain() {
            source.stop.cancel();
        }
        inner.members.clear();
    }

    fn start(&self, source: EventSource) -> Source {
        let table = Arc::new(Mutex::new(WorkerTable::default()));
        let link = Arc::new(Mutex::new(LinkState::Connecting));
        let stop = CancellationToken::new();
        let (beats, mut received) = mpsc::channel::<WorkerBeat>(BEAT_BUFFER);
        let report_link = link.clone();
        let report: Arc<dyn Fn(LinkState) + Send + Sync> = Arc::new(move |state| {
            *lock(&report_link) = state;
        });
        let listener = (self.listen)(source, beats, report, stop.clone());
        let filled = table.clone();
        let stopped = stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = listener => {}
                () = stopped.cancelled() => {}
            }
        });
        tokio::spawn(async move {
            // Ends when the listener (the only sender) is gone.
            while let Some(beat) = received.recv().await {
                lock(&filled).record(&beat, Timestamp::now());
            }
        });
        Source {
            table,
            link,
            members: HashSet::new(),
            stop,
        }
    }
}

fn leave(inner: &mut Inner, id: &str, source: &EventSource) {
    let empty = inner.sources.get_mut(source).is_some_and(|entry| {
        entry.members.remove(id);
        entry.members.is_empty()
    });
    if empty && let Some(entry) = inner.sources.remove(source) {
        entry.stop.cancel();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::queue::{Credentials, QueueUri};
    use crate::workers::BeatKind;

    fn source(db: u32) -> EventSource {
        let uri = QueueUri::parse(&format!("redis://127.0.0.1:6379/{db}/jobs")).expect("uri");
        uri.celery_events(&Credentials::default())
            .expect("redis has worker events")
    }

    fn beat(hostname: &str, active: u32) -> WorkerBeat {
        WorkerBeat {
            hostname: hostname.to_string(),
            kind: BeatKind::Heartbeat,
            active,
            processed: 0,
            freq: 2.0,
            sent_at: None,
        }
    }

    /// A listener that reports `state`, sends `beats`, then waits to be stopped; counts the
    /// listeners started and stopped.
    fn fake(
        state: LinkState,
        beats: Vec<WorkerBeat>,
        started: Arc<AtomicUsize>,
        stopped: Arc<AtomicUsize>,
    ) -> Listen {
        Arc::new(move |_source, sender, report, stop| {
            let (state, beats, stopped) = (state.clone(), beats.clone(), stopped.clone());
            started.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                // Counted when the listener ends, however it is ended (a stopped listener's
                // future is dropped).
                let _counted = CountOnDrop(stopped);
                report(state);
                for beat in beats {
                    let _ = sender.send(beat).await;
                }
                stop.cancelled().await;
            })
        })
    }

    struct CountOnDrop(Arc<AtomicUsize>);

    impl Drop for CountOnDrop {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    async fn settle() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    #[tokio::test]
    async fn one_listener_per_broker_shared_and_stopped_with_its_last_wpa() {
        let (started, stopped) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let long_ago = Timestamp::now() - jiff::SignedDuration::from_secs(60);
        let signals = WorkerSignals::new(fake(
            LinkState::Listening(long_ago),
            Vec::new(),
            started.clone(),
            stopped.clone(),
        ));
        signals.attach("a", vec![source(0)]);
        signals.attach("b", vec![source(0)]);
        signals.attach("c", vec![source(1)]);
        settle().await;
        assert_eq!(
            (signals.listeners(), started.load(Ordering::SeqCst)),
            (2, 2)
        );
        signals.detach("a");
        settle().await;
        assert_eq!(
            (signals.listeners(), stopped.load(Ordering::SeqCst)),
            (2, 0)
        );
        signals.detach("b");
        // c moves to db 0: its old listener stops, a new one starts.
        signals.attach("c", vec![source(0)]);
        settle().await;
        assert_eq!(signals.listeners(), 1);
        assert_eq!(
            (
                started.load(Ordering::SeqCst),
                stopped.load(Ordering::SeqCst)
            ),
            (3, 2)
        );
        assert_eq!(
            signals.view("a", Timestamp::now()),
            None,
            "a has no broker any more"
        );
        signals.shutdown();
        settle().await;
        assert_eq!(
            (signals.listeners(), stopped.load(Ordering::SeqCst)),
            (0, 3)
        );
    }

    #[tokio::test]
    async fn the_view_is_starting_then_live_with_the_beats() {
        let counter = || Arc::new(AtomicUsize::new(0));
        let since = Timestamp::now();
        let signals = WorkerSignals::new(fake(
            LinkState::Listening(since),
            vec![beat("celery@w-1", 2), beat("celery@w-2", 0)],
            counter(),
            counter(),
        ));
        signals.attach("a", vec![source(0)]);
        settle().await;
        assert_eq!(signals.view("a", since), Some(SignalView::Starting));
        let later = Timestamp::now() + jiff::SignedDuration::try_from(WARM_UP).expect("warm-up");
        let Some(SignalView::Live(mut workers)) = signals.view("a", later) else {
            panic!("live after the warm-up");
        };
        workers.sort_by(|a, b| a.hostname.cmp(&b.hostname));
        let seen: Vec<(&str, u32)> = workers
            .iter()
            .map(|w| (w.hostname.as_str(), w.active))
            .collect();
        assert_eq!(seen, [("celery@w-1", 2), ("celery@w-2", 0)]);
    }

    #[tokio::test]
    async fn a_failing_listener_says_why() {
        let counter = || Arc::new(AtomicUsize::new(0));
        let signals = WorkerSignals::new(fake(
            LinkState::Failed("connection refused".into()),
            Vec::new(),
            counter(),
            counter(),
        ));
        signals.attach("a", vec![source(0)]);
        settle().await;
        assert_eq!(
            signals.view("a", Timestamp::now()),
            Some(SignalView::Failing("connection refused".into()))
        );
    }
}
