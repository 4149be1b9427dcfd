//! Client-side pacing of Kubernetes API requests: `--k8s-api-qps` / `--k8s-api-burst`, a token
//! bucket in front of every request the kube client sends, as client-go's flags of the same
//! name (practo's defaults 5 / 10). Requests wait for a token; none is dropped.

use std::future::Future;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tower::{Layer, Service};

/// Adds the token bucket to a client's service stack.
#[derive(Clone)]
pub struct ApiRateLimitLayer {
    limiter: Arc<DefaultDirectRateLimiter>,
}

impl ApiRateLimitLayer {
    /// `qps` tokens per second refill a bucket of `burst` (at least 1); `None` when `qps` is
    /// zero, negative or not a number, which turns pacing off.
    pub fn new(qps: f64, burst: u32) -> Option<Self> {
        if !qps.is_finite() || qps <= 0.0 {
            return None;
        }
        // One token every 1/qps seconds; clamp so absurd values stay representable.
        let period = Duration::from_secs_f64((1.0 / qps).clamp(1e-6, 86_400.0));
        let quota = Quota::with_period(period)?.allow_burst(NonZeroU32::new(burst.max(1))?);
        Some(Self {
            limiter: Arc::new(RateLimiter::direct(quota)),
        })
    }
}

impl<S> Layer<S> for ApiRateLimitLayer {
    type Service = ApiRateLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ApiRateLimit {
            inner,
            limiter: self.limiter.clone(),
            waiting: None,
            has_token: false,
        }
    }
}

type Wait = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The service `ApiRateLimitLayer` wraps around the client's: ready only once it holds a token.
pub struct ApiRateLimit<S> {
    inner: S,
    limiter: Arc<DefaultDirectRateLimiter>,
    waiting: Option<Wait>,
    has_token: bool,
}

impl<S, Request> Service<Request> for ApiRateLimit<S>
where
    S: Service<Request>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if !self.has_token {
            let limiter = &self.limiter;
            let waiting = self.waiting.get_or_insert_with(|| {
                let limiter = limiter.clone();
                Box::pin(async move { limiter.until_ready().await })
            });
            match waiting.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    self.waiting = None;
                    self.has_token = true;
                }
                Poll::Pending => return Poll::Pending,
            }
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        // tower's contract: `call` follows a successful `poll_ready`, which took the token.
        self.has_token = false;
        self.inner.call(request)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use tower::{ServiceExt, service_fn};

    use super::*;

    async fn send_all(layer: &ApiRateLimitLayer, n: usize) -> Vec<Duration> {
        let start = Instant::now();
        let mut service = layer.layer(service_fn(|()| async {
            Ok::<_, std::convert::Infallible>(())
        }));
        let mut sent_at = Vec::new();
        for _ in 0..n {
            service.ready().await.expect("ready");
            service.call(()).await.expect("called");
            sent_at.push(start.elapsed());
        }
        sent_at
    }

    #[tokio::test]
    async fn a_burst_passes_then_requests_are_paced() {
        let layer = ApiRateLimitLayer::new(20.0, 3).expect("limit on");
        let sent_at = send_all(&layer, 7).await;
        // 3 from the bucket, then one token per 50 ms: the 7th waits for 4 refills. Only a
        // lower bound is asserted; a slow machine only adds time.
        assert!(sent_at[6] >= Duration::from_millis(190), "{sent_at:?}");
        assert!(sent_at[3] >= Duration::from_millis(40), "{sent_at:?}");
    }

    #[tokio::test]
    async fn clones_share_one_bucket() {
        // kube clones the client per API; all of them draw from the same bucket.
        let layer = ApiRateLimitLayer::new(10.0, 1).expect("limit on");
        let other = layer.clone();
        let (a, b) = tokio::join!(send_all(&layer, 2), send_all(&other, 2));
        let last = a[1].max(b[1]);
        // 4 requests, 1 from the bucket, 3 refills at 100 ms each.
        assert!(last >= Duration::from_millis(290), "{a:?} {b:?}");
    }

    #[test]
    fn zero_negative_or_nan_qps_turns_pacing_off() {
        assert!(ApiRateLimitLayer::new(0.0, 10).is_none());
        assert!(ApiRateLimitLayer::new(-1.0, 10).is_none());
        assert!(ApiRateLimitLayer::new(f64::NAN, 10).is_none());
        assert!(
            ApiRateLimitLayer::new(0.001, 0).is_some(),
            "burst 0 means 1"
        );
        assert!(ApiRateLimitLayer::new(1e12, 10).is_some());
    }
}
