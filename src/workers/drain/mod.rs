//! Draining Celery workers before their pods are removed: telling them to stop taking
//! work from the WPA's queues, asking what they still hold, and undoing it.
//!
//! All of it goes through Celery's remote control (the broker's pidbox), which workers
//! answer by default: `cancel_consumer <queue>` stops a worker consuming a queue (what it
//! already holds, running or prefetched, it keeps and finishes), `add_consumer <queue>`
//! starts it again, and `active_queues`, `active` and `reserved` say what it consumes and
//! holds. Commands name their workers by node name (`destination`), so only the victims
//! act on them; a command without names would reach every worker, so none is ever sent.
//!
//! - [`envelope`]: the messages (pure, the same on every broker).
//! - `redis_pidbox`: kombu's Redis transport (PUBLISH, replies via a bound list).
//! - `amqp_pidbox`: kombu's AMQP mailbox on RabbitMQ (the `celery.pidbox` fanout
//!   exchange, replies via our own queue bound to `reply.celery.pidbox`).
//! - `sidekiq_quiet`: Sidekiq processes, quieted by pod (`TSTP`), which cannot be undone.
//!
//! Which one is used follows the WPA's queues ([`DrainVia`]): Celery's broker
//! ([`EventSource`]), or Sidekiq's processes.

mod amqp_pidbox;
pub mod envelope;
mod redis_pidbox;
mod sidekiq_quiet;

use std::time::Duration;

use serde_json::Value;

use self::amqp_pidbox::AmqpPidbox;
use self::envelope::{Command, Reply};
use self::redis_pidbox::RedisPidbox;
pub use self::sidekiq_quiet::SidekiqQuiet;
use crate::queue::events::EventSource;

/// Why a drain command could not be sent or answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DrainError {
    #[error("remote control on {broker} failed: {detail}")]
    Broker { broker: String, detail: String },
    /// No worker ever listened for remote control there (RabbitMQ: the mailbox exchange
    /// was never declared on the vhost).
    #[error(
        "no Celery worker listens for remote control on {broker}: exchange {exchange} does not exist"
    )]
    NoMailbox { broker: String, exchange: String },
    #[error("workers on {broker} cannot take work again once told to stop")]
    Irreversible { broker: String },
}

/// How a WPA's workers are told to stop taking work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DrainVia {
    /// Celery's remote control on the broker whose worker events `EventSource` describes;
    /// commands name the workers by node name.
    Celery(EventSource),
    /// Sidekiq's process signals; commands name the pods.
    Sidekiq(SidekiqQuiet),
}

impl DrainVia {
    /// Whether workers told to stop can be told to take work again (Celery's
    /// `add_consumer`); a Sidekiq process stays quiet until it exits.
    pub fn reversible(&self) -> bool {
        matches!(self, DrainVia::Celery(_))
    }

    /// Whether a drain names pods rather than the workers' own names.
    pub fn names_pods(&self) -> bool {
        matches!(self, DrainVia::Sidekiq(_))
    }

    /// The broker, for messages (no secret).
    pub fn redacted(&self) -> String {
        match self {
            DrainVia::Celery(source) => source.redacted(),
            DrainVia::Sidekiq(quiet) => quiet.label().to_string(),
        }
    }
}

/// How long a worker may still act on a command: a command stuck that long (a worker
/// blocked, a broker backlog) is better dropped than run late.
const COMMAND_TTL: Duration = Duration::from_secs(30);

/// The `expires` header of a command sent now (seconds since the epoch, as kombu writes
/// it).
fn command_expiry() -> f64 {
    jiff::Timestamp::now().as_millisecond() as f64 / 1000.0 + COMMAND_TTL.as_secs_f64()
}

/// What one worker consumes and holds, as it answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeHolding {
    pub node: String,
    /// The queues it consumes from now.
    pub consuming: Vec<String>,
    /// Tasks it executes.
    pub active: usize,
    /// Tasks it has received and not started (prefetched).
    pub reserved: usize,
}

impl NodeHolding {
    /// Stopped on every one of `queues`, with nothing running or waiting.
    pub fn drained(&self, queues: &[String]) -> bool {
        self.active == 0 && self.reserved == 0 && !self.consuming.iter().any(|q| queues.contains(q))
    }
}

/// The way to drain the workers of one broker (Celery's remote control, Sidekiq's
/// signals).
#[derive(Debug, Clone)]
pub struct Mailbox {
    via: DrainVia,
    connect_timeout: Duration,
}

impl Mailbox {
    /// The mailbox for the workers `via` reaches.
    pub fn new(via: DrainVia, connect_timeout: Duration) -> Self {
        Self {
            via,
            connect_timeout,
        }
    }

    pub fn broker(&self) -> String {
        self.via.redacted()
    }

    /// Tells `nodes` (Celery node names, or pods for Sidekiq) to stop consuming from
    /// `queues`.
    pub async fn cancel(&self, nodes: &[String], queues: &[String]) -> Result<(), DrainError> {
        let source = match &self.via {
            DrainVia::Celery(source) => source,
            // Sidekiq has no per-queue stop: the whole process goes quiet.
            DrainVia::Sidekiq(quiet) => return quiet.quiet(nodes, self.connect_timeout).await,
        };
        let commands: Vec<Command> = queues
            .iter()
            .map(|q| Command::CancelConsumer(q.clone()))
            .collect();
        self.cast(source, &commands, nodes).await
    }

    /// Tells `nodes` to consume from `queues` again. A worker already consuming one
    /// ignores it. Sidekiq cannot: [`DrainError::Irreversible`].
    pub async fn resume(&self, nodes: &[String], queues: &[String]) -> Result<(), DrainError> {
        let DrainVia::Celery(source) = &self.via else {
            return Err(DrainError::Irreversible {
                broker: self.broker(),
            });
        };
        let commands: Vec<Command> = queues
            .iter()
            .map(|q| Command::AddConsumer(q.clone()))
            .collect();
        self.cast(source, &commands, nodes).await
    }

    /// What each of `nodes` consumes and holds, for those that answered within `timeout`
    /// (a node missing from the answer is unknown, never drained).
    pub async fn holdings(
        &self,
        nodes: &[String],
        timeout: Duration,
    ) -> Result<Vec<NodeHolding>, DrainError> {
        if nodes.is_empty() {
            return Ok(Vec::new());
        }
        let source = match &self.via {
            DrainVia::Celery(source) => source,
            DrainVia::Sidekiq(quiet) => {
                return quiet
                    .holdings(nodes, self.connect_timeout.max(timeout))
                    .await;
            }
        };
        let commands = [Command::ActiveQueues, Command::Active, Command::Reserved];
        let replies = match source {
            EventSource::Redis(redis) => {
                RedisPidbox::new(redis, self.connect_timeout)
                    .call(&commands, nodes, timeout)
                    .await?
            }
            EventSource::Rabbitmq(amqp) => {
                AmqpPidbox::new(amqp, self.connect_timeout)
                    .call(&commands, nodes, timeout)
                    .await?
            }
        };
        Ok(holdings_from(nodes, &replies))
    }

    async fn cast(
        &self,
        source: &EventSource,
        commands: &[Command],
        nodes: &[String],
    ) -> Result<(), DrainError> {
        // Never without names: a command without a destination reaches every worker.
        if nodes.is_empty() || commands.is_empty() {
            return Ok(());
        }
        match source {
            EventSource::Redis(redis) => {
                RedisPidbox::new(redis, self.connect_timeout)
                    .cast(commands, nodes)
                    .await
            }
            EventSource::Rabbitmq(amqp) => {
                AmqpPidbox::new(amqp, self.connect_timeout)
                    .cast(commands, nodes)
                    .await
            }
        }
    }
}

/// Each node that answered all three questions (`active_queues`, `active`, `reserved`,
/// by index), with its answers.
fn holdings_from(nodes: &[String], replies: &[(usize, Reply)]) -> Vec<NodeHolding> {
    let answer = |node: &str, index: usize| {
        replies
            .iter()
            .find(|(i, r)| *i == index && r.node == node)
            .and_then(|(_, r)| r.result.as_array())
    };
    nodes
        .iter()
        .filter_map(|node| {
            let queues = answer(node, 0)?;
            let active = answer(node, 1)?;
            let reserved = answer(node, 2)?;
            Some(NodeHolding {
                node: node.clone(),
                consuming: queues
                    .iter()
                    .filter_map(|q| q.get("name").and_then(Value::as_str))
                    .map(str::to_string)
                    .collect(),
                active: active.len(),
                reserved: reserved.len(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn reply(index: usize, node: &str, result: Value) -> (usize, Reply) {
        (
            index,
            Reply {
                ticket: String::new(),
                node: node.into(),
                result,
            },
        )
    }

    #[tokio::test]
    async fn drain_sends_nothing_without_node_names() {
        // Nothing listens on port 1: any attempt to reach the broker would fail.
        let nowhere = EventSource::Rabbitmq(crate::queue::events::AmqpEvents {
            tls: false,
            host: "127.0.0.1".into(),
            port: 1,
            vhost: "/".into(),
            username: "guest".into(),
            password: "guest".into(),
        });
        let mailbox = Mailbox::new(DrainVia::Celery(nowhere), Duration::from_secs(1));
        let queues = vec!["q".to_string()];
        assert_eq!(mailbox.cancel(&[], &queues).await, Ok(()));
        assert_eq!(mailbox.resume(&[], &queues).await, Ok(()));
        assert_eq!(
            mailbox.holdings(&[], Duration::from_secs(1)).await,
            Ok(vec![])
        );
        let nodes = vec!["celery@a".to_string()];
        let error = mailbox
            .cancel(&nodes, &queues)
            .await
            .expect_err("nothing there");
        assert!(matches!(error, DrainError::Broker { .. }), "{error:?}");
        assert!(!error.to_string().contains(":guest@"), "{error}");
    }

    #[test]
    fn drain_holdings_need_all_three_answers() {
        let nodes = vec!["celery@a".to_string(), "celery@b".to_string()];
        let replies = vec![
            reply(0, "celery@a", json!([{"name": "q1"}, {"name": "other"}])),
            reply(1, "celery@a", json!([])),
            reply(2, "celery@a", json!([{"id": "r1"}, {"id": "r2"}])),
            // b answered only two questions; an error is not an answer.
            reply(0, "celery@b", json!([])),
            reply(1, "celery@b", json!({"error": "boom"})),
        ];
        let holdings = holdings_from(&nodes, &replies);
        assert_eq!(
            holdings,
            vec![NodeHolding {
                node: "celery@a".into(),
                consuming: vec!["q1".into(), "other".into()],
                active: 0,
                reserved: 2,
            }]
        );
        let queues = vec!["q1".to_string()];
        assert!(!holdings[0].drained(&queues));
        let stopped = NodeHolding {
            consuming: vec!["other".into()],
            reserved: 0,
            ..holdings[0].clone()
        };
        assert!(
            stopped.drained(&queues),
            "another program's queue is not ours"
        );
        assert!(
            !NodeHolding {
                active: 1,
                ..stopped
            }
            .drained(&queues)
        );
    }
}
