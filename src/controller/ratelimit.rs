//! Client-side pacing of Kubernetes API requests: `--k8s-api-qps` / `--k8s-api-burst`, a token
//! bucket in front of every request the kube client sends, as client-go's flags of the same
//! name (practo's defaults 5 / 10). Requests wait for a token; none is dropped.
//!
//! Scale writes have a budget of their own (`--k8s-api-scale-qps` / `--k8s-api-scale-burst`):
//! they are what the controller is for, they are few (one per WPA whose queue changed) and a
//! hundred queues filling at once must not wait 20 s for 5-per-second tokens. The other
//! requests share the general bucket and are served by importance, not arrival: reads,
//! watches and lease renewals, then Events, then status writes. So a burst of status writes
//! (thousands of WPAs at start) never holds up anything else.

use std::collections::VecDeque;
use std::marker::PhantomData;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use http::{Method, Request};
use prometheus::CounterVec;
use tokio::sync::{Notify, oneshot};
use tower::buffer::Buffer;
use tower::{BoxError, Layer, Service, ServiceExt};
use tracing::warn;

use super::shutdown::Shutdown;

/// One token bucket: `qps` tokens per second refill a bucket of `burst` (at least 1);
/// `None` when `qps` is zero, negative or not a number (no pacing).
fn bucket(qps: f64, burst: u32) -> Option<DefaultDirectRateLimiter> {
    if !qps.is_finite() || qps <= 0.0 {
        return None;
    }
    // One token every 1/qps seconds; clamp so absurd values stay representable.
    let period = Duration::from_secs_f64((1.0 / qps).clamp(1e-6, 86_400.0));
    let quota = Quota::with_period(period)?.allow_burst(NonZeroU32::new(burst.max(1))?);
    Some(RateLimiter::direct(quota))
}

/// A wait for a token longer than this is worth telling the operator about.
const SLOW_WAIT: Duration = Duration::from_secs(1);
/// At most one such warning this often.
const WARN_EVERY: Duration = Duration::from_secs(60);
/// Requests kube may hand to the stack below this layer before it pushes back.
const BUFFER: usize = 1024;

/// What kind of request, in the order tokens are handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Lane {
    /// A write to a `/scale` subresource, or a pod's deletion cost set just before one.
    Scale = 0,
    /// Reads, watches, lease renewals and anything else.
    Other = 1,
    /// Event creation and updates.
    Event = 2,
    /// A write to a `/status` subresource.
    Status = 3,
}

impl Lane {
    const COUNT: usize = 4;

    pub fn of<B>(request: &Request<B>) -> Lane {
        let path = request.uri().path();
        let write = matches!(*request.method(), Method::PATCH | Method::PUT);
        if write && (path.ends_with("/scale") || is_pod(path)) {
            Lane::Scale
        } else if write && path.ends_with("/status") {
            Lane::Status
        } else if (write || request.method() == Method::POST) && path.contains("/events") {
            Lane::Event
        } else {
            Lane::Other
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Lane::Scale => "scale",
            Lane::Other => "other",
            Lane::Event => "event",
            Lane::Status => "status",
        }
    }
}

/// `/api/v1/namespaces/{ns}/pods/{name}`: a pod itself, not a subresource.
fn is_pod(path: &str) -> bool {
    path.strip_prefix("/api/v1/namespaces/")
        .and_then(|rest| rest.split_once('/'))
        .and_then(|(_, rest)| rest.strip_prefix("pods/"))
        .is_some_and(|name| !name.is_empty() && !name.contains('/'))
}

/// The two budgets, from the flags.
#[derive(Debug, Clone, Copy)]
pub struct Pacing {
    pub qps: f64,
    pub burst: u32,
    pub scale_qps: f64,
    pub scale_burst: u32,
}

/// Where the time spent waiting for tokens is counted (label `kind`: the lane).
#[derive(Clone)]
pub struct PacingReport {
    /// Seconds requests spent waiting for a token.
    pub wait_seconds: CounterVec,
    /// Requests that went through the pacing.
    pub requests: CounterVec,
}

/// The shared bucket and the requests waiting for it, by lane.
struct Pacer {
    limiter: DefaultDirectRateLimiter,
    /// Scale writes' own bucket; `None`: scale writes are not paced.
    scale_limiter: Option<DefaultDirectRateLimiter>,
    waiting: Mutex<[VecDeque<oneshot::Sender<()>>; Lane::COUNT]>,
    wake: Notify,
    report: Option<PacingReport>,
    pacing: Pacing,
    last_warning: Mutex<Option<Instant>>,
    /// After it is requested, writes are refused and reads skip the queue.
    shutdown: Shutdown,
}

impl Pacer {
    fn waiting(&self) -> MutexGuard<'_, [VecDeque<oneshot::Sender<()>>; Lane::COUNT]> {
        // Each update is a push or a pop: a panicking holder cannot leave it half done.
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits until this request may be sent; `false` when it must not be sent at all:
    /// after the shutdown signal only reads and lease updates go out (at once), no writes.
    async fn acquire(&self, lane: Lane) -> bool {
        let may_send_now = || lane == Lane::Other || !self.shutdown.requested();
        if self.shutdown.requested() {
            return may_send_now();
        }
        let started = Instant::now();
        let token = async {
            if lane == Lane::Scale {
                if let Some(limiter) = &self.scale_limiter {
                    limiter.until_ready().await;
                }
            } else if let Some(ticket) = self.ticket(lane) {
                self.wake.notify_one();
                // An error means the dispatcher is gone (runtime shutting down): go ahead.
                let _ = ticket.await;
            }
        };
        tokio::select! {
            () = token => {}
            // Dropping a ticket passes its token on.
            () = self.shutdown.clone().wait() => return may_send_now(),
        }
        self.record(lane, started.elapsed());
        may_send_now()
    }

    /// A place in the general bucket's queue; `None` when a token was free and nobody
    /// waits (the request may go at once).
    fn ticket(&self, lane: Lane) -> Option<oneshot::Receiver<()>> {
        let mut waiting = self.waiting();
        if waiting.iter().all(VecDeque::is_empty) && self.limiter.check().is_ok() {
            return None;
        }
        let (sender, receiver) = oneshot::channel();
        waiting[lane as usize].push_back(sender);
        Some(receiver)
    }

    fn record(&self, lane: Lane, waited: Duration) {
        if let Some(report) = &self.report {
            report.requests.with_label_values(&[lane.label()]).inc();
            report
                .wait_seconds
                .with_label_values(&[lane.label()])
                .inc_by(waited.as_secs_f64());
        }
        if waited >= SLOW_WAIT {
            let mut last = self
                .last_warning
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if last.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
                *last = Some(Instant::now());
                // Scale writes have their own budget and flags.
                let (qps, flags) = if lane == Lane::Scale {
                    (
                        self.pacing.scale_qps,
                        "--k8s-api-scale-qps and --k8s-api-scale-burst",
                    )
                } else {
                    (self.pacing.qps, "--k8s-api-qps and --k8s-api-burst")
                };
                warn!(
                    kind = lane.label(),
                    waited_ms = waited.as_millis() as u64,
                    qps,
                    "client-side API pacing held a request back; if this persists, raise {flags} \
                     (see wpa_k8s_api_pacing_wait_seconds_total)"
                );
            }
        }
    }

    /// Hands each token, as it becomes available, to the most important waiting request.
    async fn dispatch(self: Arc<Self>) {
        loop {
            while self.waiting().iter().all(VecDeque::is_empty) {
                self.wake.notified().await;
            }
            self.limiter.until_ready().await;
            let mut waiting = self.waiting();
            // A waiter that gave up (its request was dropped) passes the token on.
            'handed: for lane in waiting.iter_mut() {
                while let Some(sender) = lane.pop_front() {
                    if sender.send(()).is_ok() {
                        break 'handed;
                    }
                }
            }
        }
    }
}

/// A write that was still waiting for its token when shutdown was requested; not sent.
#[derive(Debug, thiserror::Error)]
#[error("shutting down: the write was not sent")]
pub struct ShuttingDown;

/// Adds the prioritised token bucket to a client's service stack (requests with bodies of
/// type `B`).
pub struct ApiRateLimitLayer<B = kube::client::Body> {
    pacer: Arc<Pacer>,
    body: PhantomData<fn() -> B>,
}

impl<B> Clone for ApiRateLimitLayer<B> {
    fn clone(&self) -> Self {
        Self {
            pacer: self.pacer.clone(),
            body: PhantomData,
        }
    }
}

impl<B> ApiRateLimitLayer<B> {
    /// The general bucket (`qps`, `burst`) and the scale writes' (`pacing.scale_qps`,
    /// `pacing.scale_burst`); `None` when `qps` is zero, negative or not a number, which turns
    /// all pacing off. Must be called within a Tokio runtime (it starts the task that hands
    /// out tokens).
    pub fn new(pacing: Pacing, report: Option<PacingReport>, shutdown: Shutdown) -> Option<Self> {
        let pacer = Arc::new(Pacer {
            limiter: bucket(pacing.qps, pacing.burst)?,
            scale_limiter: bucket(pacing.scale_qps, pacing.scale_burst),
            waiting: Mutex::new(Default::default()),
            wake: Notify::new(),
            report,
            pacing,
            last_warning: Mutex::new(None),
            shutdown,
        });
        tokio::spawn(pacer.clone().dispatch());
        Some(Self {
            pacer,
            body: PhantomData,
        })
    }
}

impl<S, B> Layer<S> for ApiRateLimitLayer<B>
where
    S: Service<Request<B>> + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError> + Send + Sync,
    B: Send + 'static,
{
    type Service = ApiRateLimit<S::Future, B>;

    fn layer(&self, inner: S) -> Self::Service {
        ApiRateLimit {
            // The buffer lets a request wait for its token inside its own future instead of
            // in `poll_ready`, where it would hold up every request behind it.
            inner: Buffer::new(inner, BUFFER),
            pacer: self.pacer.clone(),
        }
    }
}

/// The service `ApiRateLimitLayer` wraps around the client's.
pub struct ApiRateLimit<F, B> {
    inner: Buffer<Request<B>, F>,
    pacer: Arc<Pacer>,
}

impl<F, B, R, E> Service<Request<B>> for ApiRateLimit<F, B>
where
    F: std::future::Future<Output = Result<R, E>> + Send + 'static,
    E: Into<BoxError> + Send + Sync,
    B: Send + 'static,
    R: Send + 'static,
{
    type Response = R;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<R, BoxError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Capacity is awaited in the request's own future, after its token.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let lane = Lane::of(&request);
        let pacer = self.pacer.clone();
        let inner = self.inner.clone();
        Box::pin(async move {
            if !pacer.acquire(lane).await {
                return Err(ShuttingDown.into());
            }
            inner.oneshot(request).await
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use prometheus::Opts;
    use tower::service_fn;

    use super::*;

    type Sent = Arc<Mutex<Vec<(String, Duration)>>>;

    /// A stack whose inner service records each request's path and when it arrived.
    type TestLayer = ApiRateLimitLayer<()>;

    /// The general bucket as given; scale writes with a bucket of their own of 20/s, burst 1.
    fn pacing(qps: f64, burst: u32) -> Pacing {
        Pacing {
            qps,
            burst,
            scale_qps: 20.0,
            scale_burst: 1,
        }
    }

    fn stack(
        layer: &TestLayer,
        sent: Sent,
        start: Instant,
    ) -> ApiRateLimit<BoxFuture<'static, Result<(), BoxError>>, ()> {
        let inner = service_fn(move |request: Request<()>| {
            let sent = sent.clone();
            Box::pin(async move {
                sent.lock()
                    .unwrap()
                    .push((request.uri().path().to_string(), start.elapsed()));
                Ok::<_, BoxError>(())
            }) as BoxFuture<'static, Result<(), BoxError>>
        });
        layer.layer(inner)
    }

    fn request(method: Method, path: &str) -> Request<()> {
        Request::builder()
            .method(method)
            .uri(path)
            .body(())
            .expect("request")
    }

    #[test]
    fn requests_are_sorted_into_lanes() {
        let cases = [
            (
                Method::PATCH,
                "/apis/apps/v1/namespaces/a/deployments/w/scale",
                Lane::Scale,
            ),
            (
                Method::PUT,
                "/apis/apps/v1/namespaces/a/statefulsets/w/scale",
                Lane::Scale,
            ),
            (
                Method::GET,
                "/apis/apps/v1/namespaces/a/deployments/w/scale",
                Lane::Other,
            ),
            (Method::PATCH, "/api/v1/namespaces/a/pods/w-1", Lane::Scale),
            (Method::GET, "/api/v1/namespaces/a/pods/w-1", Lane::Other),
            (
                Method::PATCH,
                "/api/v1/namespaces/a/pods/w-1/status",
                Lane::Status,
            ),
            (Method::PATCH, "/api/v1/namespaces/a/podsx/w-1", Lane::Other),
            (
                Method::PATCH,
                "/apis/k8s.practo.dev/v1/namespaces/a/workerpodautoscalers/w/status",
                Lane::Status,
            ),
            (
                Method::POST,
                "/apis/events.k8s.io/v1/namespaces/a/events",
                Lane::Event,
            ),
            (
                Method::PATCH,
                "/apis/events.k8s.io/v1/namespaces/a/events/e1",
                Lane::Event,
            ),
            (
                Method::GET,
                "/api/v1/namespaces/a/secrets/creds",
                Lane::Other,
            ),
            (
                Method::PUT,
                "/apis/coordination.k8s.io/v1/namespaces/a/leases/wpa",
                Lane::Other,
            ),
        ];
        for (method, path, lane) in cases {
            assert_eq!(
                Lane::of(&request(method.clone(), path)),
                lane,
                "{method} {path}"
            );
        }
    }

    #[tokio::test]
    async fn a_burst_passes_then_requests_are_paced() {
        let layer = TestLayer::new(pacing(20.0, 3), None, Shutdown::new()).expect("limit on");
        let sent: Sent = Arc::default();
        let start = Instant::now();
        let mut service = stack(&layer, sent.clone(), start);
        for _ in 0..7 {
            service
                .call(request(Method::GET, "/x"))
                .await
                .expect("sent");
        }
        let times: Vec<Duration> = sent.lock().unwrap().iter().map(|(_, t)| *t).collect();
        // 3 from the bucket, then one token per 50 ms: the 7th waits for 4 refills. Only a
        // lower bound is asserted; a slow machine only adds time.
        assert!(times[6] >= Duration::from_millis(190), "{times:?}");
        assert!(times[3] >= Duration::from_millis(40), "{times:?}");
    }

    #[tokio::test]
    async fn clones_share_one_bucket() {
        // kube clones the client per API; all of them draw from the same bucket.
        let layer = TestLayer::new(pacing(10.0, 1), None, Shutdown::new()).expect("limit on");
        let sent: Sent = Arc::default();
        let start = Instant::now();
        let a = stack(&layer, sent.clone(), start);
        let b = stack(&layer.clone(), sent.clone(), start);
        let calls = (0..4).map(|i| {
            let mut service = if i % 2 == 0 {
                a.clone_service()
            } else {
                b.clone_service()
            };
            async move { service.call(request(Method::GET, "/x")).await }
        });
        for result in futures::future::join_all(calls).await {
            result.expect("sent");
        }
        let last = sent.lock().unwrap().iter().map(|(_, t)| *t).max();
        // 4 requests, 1 from the bucket, 3 refills at 100 ms each.
        assert!(last >= Some(Duration::from_millis(290)), "{last:?}");
    }

    impl ApiRateLimit<BoxFuture<'static, Result<(), BoxError>>, ()> {
        fn clone_service(&self) -> Self {
            Self {
                inner: self.inner.clone(),
                pacer: self.pacer.clone(),
            }
        }
    }

    #[tokio::test]
    async fn a_scale_write_overtakes_waiting_status_writes() {
        let wait_seconds = CounterVec::new(Opts::new("w", "w"), &["kind"]).expect("counter");
        let requests = CounterVec::new(Opts::new("r", "r"), &["kind"]).expect("counter");
        let report = PacingReport {
            wait_seconds: wait_seconds.clone(),
            requests: requests.clone(),
        };
        // One token every 50 ms, none in reserve after the first.
        let layer =
            TestLayer::new(pacing(20.0, 1), Some(report), Shutdown::new()).expect("limit on");
        let sent: Sent = Arc::default();
        let start = Instant::now();
        let service = stack(&layer, sent.clone(), start);
        let queued = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for i in 0..10 {
            let mut service = service.clone_service();
            let queued = queued.clone();
            tasks.push(tokio::spawn(async move {
                let path = format!("/apis/g/v1/namespaces/a/wpas/w{i}/status");
                queued.fetch_add(1, Ordering::SeqCst);
                service.call(request(Method::PATCH, &path)).await
            }));
        }
        // Let the status writes queue up behind the first one.
        while queued.load(Ordering::SeqCst) < 10 {
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut scale = service.clone_service();
        scale
            .call(request(
                Method::PATCH,
                "/apis/apps/v1/namespaces/a/deployments/d/scale",
            ))
            .await
            .expect("scale sent");
        for task in tasks {
            task.await.expect("task").expect("sent");
        }
        let order: Vec<String> = sent
            .lock()
            .unwrap()
            .iter()
            .map(|(p, _)| p.clone())
            .collect();
        let scale_at = order
            .iter()
            .position(|p| p.ends_with("/scale"))
            .expect("scale sent");
        // At most the one status write that held the bucket's token, and the one whose
        // token was already being handed out, went first.
        assert!(scale_at <= 2, "scale write sent {scale_at}th: {order:?}");
        assert_eq!(requests.with_label_values(&["status"]).get(), 10.0);
        assert_eq!(requests.with_label_values(&["scale"]).get(), 1.0);
        assert!(wait_seconds.with_label_values(&["status"]).get() > 0.2);
    }

    #[tokio::test]
    async fn scale_writes_have_a_budget_of_their_own() {
        // The general bucket allows one request every 10 s.
        let layer = TestLayer::new(
            Pacing {
                qps: 0.1,
                burst: 1,
                scale_qps: 100.0,
                scale_burst: 10,
            },
            None,
            Shutdown::new(),
        )
        .expect("limit on");
        let sent: Sent = Arc::default();
        let start = Instant::now();
        let mut service = stack(&layer, sent.clone(), start);
        service
            .call(request(Method::GET, "/api/v1/namespaces/a/secrets/s"))
            .await
            .expect("read sent");
        for i in 0..10 {
            let path = format!("/apis/apps/v1/namespaces/a/deployments/d{i}/scale");
            service
                .call(request(Method::PATCH, &path))
                .await
                .expect("scale sent");
        }
        let last = sent.lock().unwrap().iter().map(|(_, t)| *t).max();
        assert!(last < Some(Duration::from_secs(5)), "{last:?}");
    }

    #[test]
    fn zero_negative_or_nan_qps_turns_pacing_off() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _guard = runtime.enter();
        assert!(TestLayer::new(pacing(0.0, 10), None, Shutdown::new()).is_none());
        assert!(TestLayer::new(pacing(-1.0, 10), None, Shutdown::new()).is_none());
        assert!(TestLayer::new(pacing(f64::NAN, 10), None, Shutdown::new()).is_none());
        assert!(
            TestLayer::new(pacing(0.001, 0), None, Shutdown::new()).is_some(),
            "burst 0 means 1"
        );
        assert!(TestLayer::new(pacing(1e12, 10), None, Shutdown::new()).is_some());
    }
}
