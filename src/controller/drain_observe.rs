//! The drain's part of observing a WPA: what is remembered of its drain and, while one
//! runs, what its victims' workers answer they hold (Celery's remote control). Writes
//! nothing.

use std::time::Duration;

use tracing::{debug, info, warn};

use super::api_errors::Seen;
use super::context::Context;
use super::drain::{Drain, DrainChannel};
use super::key::WpaKey;
use super::observed::DrainObserved;
use crate::queue::{Credentials, QueueUri};
use crate::workers::drain::{DrainError, DrainVia, Mailbox, SidekiqQuiet};

/// How long the victims get to answer what they hold: a reconcile waits for it, and a
/// worker that does not answer in time counts as not drained (asked again a second later).
pub const ASK_TIMEOUT: Duration = Duration::from_secs(1);
/// How long connecting to the broker for remote control may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The step of [`Context::failures`] asking the victims is kept under.
const ASK: &str = "drain-ask";

/// Where the workers of a WPA reading `queues` are drained: Celery queues all on one
/// broker's remote control (one Redis database, or one RabbitMQ vhost, with one identity),
/// or Sidekiq queues on one Redis database and namespace. Mixed brokers, and brokers or
/// frameworks without a way to stop a worker taking work, have none.
pub fn channel_for(queues: &[QueueUri], credentials: &Credentials) -> Option<DrainChannel> {
    let mut source: Option<DrainVia> = None;
    let mut names = Vec::with_capacity(queues.len());
    for queue in queues {
        let (via, name) = match queue {
            QueueUri::Redis(redis) => (
                DrainVia::Celery(queue.celery_events(credentials)?),
                redis.queue.clone(),
            ),
            QueueUri::Rabbitmq(amqp) => (
                DrainVia::Celery(queue.celery_events(credentials)?),
                amqp.queue.clone(),
            ),
            QueueUri::Sidekiq(sidekiq) => (
                DrainVia::Sidekiq(SidekiqQuiet::of(sidekiq, credentials)),
                sidekiq.location.queue.clone(),
            ),
            _ => return None,
        };
        match &source {
            Some(known) if *known != via => return None,
            Some(_) => {}
            None => source = Some(via),
        }
        names.push(name);
    }
    Some(DrainChannel {
        source: source?,
        queues: names,
    })
}

/// The WPA's drain, where drain before scale-in is on and its workers can be drained;
/// the target is at `replicas`.
pub async fn observe_drain(ctx: &Context, key: &WpaKey, replicas: i32) -> Option<DrainObserved> {
    if !ctx.plan.drain.enabled {
        return None;
    }
    let recall = ctx.memories.drain(key, replicas);
    let channel = recall.channel?;
    let drained = match &recall.live {
        Some(live) => ask_victims(ctx, key, &channel, live).await,
        None => Vec::new(),
    };
    Some(DrainObserved {
        channel,
        live: recall.live,
        removing: recall.removing,
        drained,
    })
}

/// The victims whose workers all answered that they hold nothing and consume none of the
/// WPA's queues. A failure to ask leaves every victim not drained.
async fn ask_victims(
    ctx: &Context,
    key: &WpaKey,
    channel: &DrainChannel,
    live: &Drain,
) -> Vec<String> {
    let nodes: Vec<String> = live
        .victims
        .iter()
        .flat_map(|v| v.nodes.iter().cloned())
        .collect();
    let mailbox = Mailbox::new(channel.source.clone(), CONNECT_TIMEOUT);
    let span = tracing::debug_span!("drain_ask", broker = %mailbox.broker(), nodes = nodes.len());
    let holdings = match tracing::Instrument::instrument(
        mailbox.holdings(&nodes, ASK_TIMEOUT),
        span,
    )
    .await
    {
        Ok(holdings) => {
            if let Some(reason) = ctx.failures.succeeded(&key.to_string(), ASK) {
                info!(failed_with = %reason, "asking the drained workers works again");
            }
            holdings
        }
        Err(e @ DrainError::NoMailbox { .. }) => {
            // No worker of the broker ever listened for remote control (RabbitMQ's mailbox
            // exchange was never declared): the victims cannot be drained, and waiting for
            // them would hold the scale-in at every drain's bound, forever. They go as
            // without drain.
            let reason = e.to_string();
            if ctx.failures.failed(&key.to_string(), ASK, &reason) == Seen::New {
                warn!(error = %reason, "the victims cannot be drained; removed as without drain");
            }
            return live.victims.iter().map(|v| v.pod.clone()).collect();
        }
        Err(e) => {
            let reason = e.to_string();
            if ctx.failures.failed(&key.to_string(), ASK, &reason) == Seen::New {
                warn!(error = %reason, "cannot ask the drained workers what they hold; they count as busy");
            }
            return Vec::new();
        }
    };
    let drained: Vec<String> = live
        .victims
        .iter()
        .filter(|v| {
            v.nodes.iter().all(|node| {
                holdings
                    .iter()
                    .any(|h| &h.node == node && h.drained(&channel.queues))
            })
        })
        .map(|v| v.pod.clone())
        .collect();
    debug!(?drained, ?holdings, "victims asked");
    drained
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uris(texts: &[&str]) -> Vec<QueueUri> {
        texts
            .iter()
            .map(|t| QueueUri::parse(t).expect("test URI"))
            .collect()
    }

    #[test]
    fn drain_channel_only_for_celery_queues_on_one_broker() {
        let none = Credentials::default();
        let one = channel_for(&uris(&["redis://h:6379/0/a", "redis://h:6379/0/b"]), &none)
            .expect("one Redis database");
        assert_eq!(one.queues, vec!["a".to_string(), "b".to_string()]);
        assert_eq!(
            channel_for(&uris(&["redis://h:6379/0/a", "redis://h:6379/1/b"]), &none),
            None,
            "two databases: two remote controls"
        );
        let rabbit = channel_for(
            &uris(&[
                "amqp://guest:guest@h:5672/%2F/a",
                "amqp://guest:guest@h:5672/%2F/b?management=http://h:15672",
            ]),
            &none,
        )
        .expect("one RabbitMQ vhost");
        assert_eq!(rabbit.queues, vec!["a".to_string(), "b".to_string()]);
        assert!(matches!(
            rabbit.source,
            DrainVia::Celery(crate::queue::events::EventSource::Rabbitmq(_))
        ));
        assert_eq!(
            channel_for(
                &uris(&[
                    "amqp://guest:guest@h:5672/%2F/a",
                    "amqp://guest:guest@h:5672/v2/b"
                ]),
                &none
            ),
            None,
            "two vhosts: two remote controls"
        );
        assert_eq!(
            channel_for(
                &uris(&["redis://h:6379/0/a", "amqp://guest:guest@h:5672/%2F/b"]),
                &none
            ),
            None,
            "mixed brokers"
        );
        assert_eq!(
            channel_for(
                &uris(&["redis://h:6379/0/a", "beanstalk://h:11300/a"]),
                &none
            ),
            None
        );
    }
}
