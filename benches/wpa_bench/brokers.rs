//! The brokers the latency and burst scenarios push messages into, behind one enum.
//!
//! Redis, RabbitMQ and beanstalkd are the machine's shared brokers (never flushed: every
//! queue name is unique and removed afterwards); SQS is a private moto_server started for
//! the run. beanstalkd tubes are never created up front: a tube that nobody uses does not
//! exist, which is the state a worker queue at zero replicas is in.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use aws_sdk_sqs::config::{BehaviorVersion, Credentials as AwsCredentials, Region};
use serde_json::{Value, json};

use crate::support::broker_procs::{BrokerProcess, start_moto, wait_for_port};
use crate::support::brokers_amqp;
use crate::support::queues::{BEANSTALKD_PORT, BeanstalkClient};

/// Redis database of the latency queues on the shared server (keys are unique per run).
const REDIS_DB: u8 = 9;
const SQS_ACCOUNT: &str = "123456789012";
const SQS_REGION: &str = "us-east-1";
/// Name of the Secret holding moto's (dummy) AWS keys, in the WPAs' namespace.
pub const SQS_SECRET: &str = "bench-aws";

/// What the scenario measures against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    Redis,
    /// RabbitMQ through AMQP passive declares (no management URL).
    RabbitAmqp,
    /// RabbitMQ through the management HTTP API.
    RabbitManagement,
    Sqs,
    Beanstalkd,
}

impl Flavor {
    pub fn label(self) -> &'static str {
        match self {
            Flavor::Redis => "redis",
            Flavor::RabbitAmqp => "rabbitmq (AMQP)",
            Flavor::RabbitManagement => "rabbitmq (management API)",
            Flavor::Sqs => "sqs (moto)",
            Flavor::Beanstalkd => "beanstalkd (tube never used)",
        }
    }

    /// The `provider` label of the controller's poll metrics.
    pub fn metric_provider(self) -> &'static str {
        match self {
            Flavor::Redis => "redis",
            Flavor::RabbitAmqp | Flavor::RabbitManagement => "rabbitmq",
            Flavor::Sqs => "sqs",
            Flavor::Beanstalkd => "beanstalkd",
        }
    }

    /// The controller flag that sets this provider's poll interval.
    pub fn interval_flag(self, seconds: u64) -> String {
        match self {
            Flavor::Redis => format!("--redis-poll-interval={seconds}"),
            Flavor::RabbitAmqp | Flavor::RabbitManagement => {
                format!("--rabbitmq-poll-interval={seconds}")
            }
            Flavor::Sqs => format!("--sqs-short-poll-interval={seconds}"),
            Flavor::Beanstalkd => format!("--beanstalk-short-poll-interval={seconds}"),
        }
    }

    /// The controller's default poll interval for this provider.
    pub fn default_interval(self) -> u64 {
        match self {
            Flavor::Sqs => 20,
            _ => 1,
        }
    }

    /// Broker requests one poll costs, as the provider documents them.
    pub fn requests_per_poll(self) -> &'static str {
        match self {
            Flavor::Redis => "1 pipelined round trip (4 LLEN + HKEYS)",
            Flavor::RabbitAmqp => "1 AMQP queue.declare (passive)",
            Flavor::RabbitManagement => {
                "1 AMQP queue.declare (passive) + 1 HTTP GET /api/queues/{vhost}/{queue}"
            }
            Flavor::Sqs => "1 GetQueueAttributes (+ 1 ReceiveMessage long poll at zero workers)",
            Flavor::Beanstalkd => "1 stats-tube",
        }
    }
}

/// A connected broker.
pub enum Broker {
    Redis {
        conn: redis::aio::MultiplexedConnection,
        port: u16,
    },
    Rabbit {
        _connection: Box<lapin::Connection>,
        channel: lapin::Channel,
        management: bool,
    },
    Sqs {
        client: aws_sdk_sqs::Client,
        port: u16,
        _moto: BrokerProcess,
    },
    Beanstalk {
        client: BeanstalkClient,
    },
}

/// One queue made for one trial.
pub struct Queue {
    pub name: String,
    /// The WPA's `queueURI`.
    pub uri: String,
    /// SQS queue URL (empty elsewhere).
    url: String,
}

impl Broker {
    pub async fn connect(flavor: Flavor, redis_port: u16, dir: &Path) -> Result<Broker> {
        Ok(match flavor {
            Flavor::Redis => {
                let client =
                    redis::Client::open(format!("redis://127.0.0.1:{redis_port}/{REDIS_DB}"))?;
                let conn = client
                    .get_multiplexed_async_connection()
                    .await
                    .with_context(|| format!("connecting to Redis on {redis_port}"))?;
                Broker::Redis {
                    conn,
                    port: redis_port,
                }
            }
            Flavor::RabbitAmqp | Flavor::RabbitManagement => {
                let (connection, channel) = brokers_amqp::open(brokers_amqp::AMQP_PORT, "/").await;
                Broker::Rabbit {
                    _connection: Box::new(connection),
                    channel,
                    management: flavor == Flavor::RabbitManagement,
                }
            }
            Flavor::Sqs => {
                let (moto, port) = start_moto(dir);
                wait_for_port(port, Duration::from_secs(60)).await;
                let config = aws_sdk_sqs::Config::builder()
                    .behavior_version(BehaviorVersion::latest())
                    .region(Region::new(SQS_REGION))
                    .credentials_provider(AwsCredentials::new("test", "test", None, None, "bench"))
                    .endpoint_url(format!("http://127.0.0.1:{port}"))
                    .build();
                Broker::Sqs {
                    client: aws_sdk_sqs::Client::from_conf(config),
                    port,
                    _moto: moto,
                }
            }
            Flavor::Beanstalkd => Broker::Beanstalk {
                client: BeanstalkClient::connect(BEANSTALKD_PORT),
            },
        })
    }

    /// A Secret the WPAs must reference, if the provider needs credentials.
    pub fn secret(&self, namespace: &str) -> Option<Value> {
        matches!(self, Broker::Sqs { .. }).then(|| {
            json!({
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": SQS_SECRET, "namespace": namespace},
                // base64("test"): moto accepts any keys.
                "data": {"username": "dGVzdA==", "password": "dGVzdA=="},
            })
        })
    }

    pub async fn create(&mut self, name: &str) -> Result<Queue> {
        let (uri, url) = match self {
            Broker::Redis { port, .. } => (
                format!("redis://127.0.0.1:{port}/{REDIS_DB}/{name}"),
                String::new(),
            ),
            Broker::Rabbit {
                channel,
                management,
                ..
            } => {
                brokers_amqp::declare(channel, name, false).await;
                let mut uri = format!(
                    "amqp://guest:guest@127.0.0.1:{}/%2F/{name}",
                    brokers_amqp::AMQP_PORT
                );
                if *management {
                    uri.push_str(&format!("?management={}", brokers_amqp::MANAGEMENT));
                }
                (uri, String::new())
            }
            Broker::Sqs { client, port, .. } => {
                let out = client
                    .create_queue()
                    .queue_name(name)
                    .send()
                    .await
                    .with_context(|| format!("creating SQS queue {name}"))?;
                let url = out.queue_url().unwrap_or_default().to_string();
                (
                    format!("http://127.0.0.1:{port}/{SQS_ACCOUNT}/{name}?region={SQS_REGION}"),
                    url,
                )
            }
            Broker::Beanstalk { .. } => (
                format!("beanstalk://127.0.0.1:{BEANSTALKD_PORT}/{name}"),
                String::new(),
            ),
        };
        Ok(Queue {
            name: name.to_string(),
            uri,
            url,
        })
    }

    /// Puts `n` messages on `queue`; returns once the broker has accepted all of them.
    pub async fn push(&mut self, queue: &Queue, n: usize) -> Result<()> {
        match self {
            Broker::Redis { conn, .. } => {
                let items: Vec<String> = (0..n).map(|i| format!("job-{i}")).collect();
                redis::cmd("LPUSH")
                    .arg(&queue.name)
                    .arg(&items)
                    .query_async::<()>(conn)
                    .await
                    .context("LPUSH")?;
            }
            Broker::Rabbit { channel, .. } => {
                brokers_amqp::publish(channel, &queue.name, n).await;
            }
            Broker::Sqs { client, .. } => {
                let mut sent = 0;
                while sent < n {
                    let chunk = (n - sent).min(10);
                    let mut batch = client.send_message_batch().queue_url(&queue.url);
                    for i in 0..chunk {
                        batch = batch.entries(
                            aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                                .id(format!("m{i}"))
                                .message_body(format!("job-{}", sent + i))
                                .build()
                                .context("SQS batch entry")?,
                        );
                    }
                    batch.send().await.context("SendMessageBatch")?;
                    sent += chunk;
                }
            }
            Broker::Beanstalk { client } => {
                for i in 0..n {
                    client.put(&queue.name, &format!("job-{i}"));
                }
            }
        }
        Ok(())
    }

    /// Poll requests the broker has served so far, all clients together (Redis: `HKEYS`
    /// calls, sent once per poll; beanstalkd: `stats-tube` commands), and the clients
    /// connected to it now. `None` for brokers this is not counted for.
    pub async fn served(&mut self) -> Result<Option<(u64, u64)>> {
        Ok(match self {
            Broker::Redis { conn, .. } => {
                let info: String = redis::cmd("INFO")
                    .arg("all")
                    .query_async(conn)
                    .await
                    .context("INFO")?;
                let field = |prefix: &str, key: &str| -> u64 {
                    info.lines()
                        .find_map(|l| l.strip_prefix(prefix))
                        .and_then(|rest| {
                            rest.split(',')
                                .find_map(|f| f.strip_prefix(key))
                                .and_then(|n| n.trim().parse().ok())
                        })
                        .unwrap_or(0)
                };
                Some((
                    field("cmdstat_hkeys:", "calls="),
                    field("connected_clients:", ""),
                ))
            }
            Broker::Beanstalk { client } => {
                let stats = client.stats();
                let count = |key: &str| stats.get(key).and_then(|v| v.parse().ok()).unwrap_or(0);
                Some((count("cmd-stats-tube"), count("current-connections")))
            }
            Broker::Rabbit { .. } | Broker::Sqs { .. } => None,
        })
    }

    /// Removes the queue (best effort: a leftover only costs the broker a little memory).
    pub async fn remove(&mut self, queue: &Queue) {
        match self {
            Broker::Redis { conn, .. } => {
                let _ = redis::cmd("DEL")
                    .arg(&queue.name)
                    .query_async::<()>(conn)
                    .await;
            }
            Broker::Rabbit { channel, .. } => brokers_amqp::delete(channel, &queue.name).await,
            Broker::Sqs { client, .. } => {
                let _ = client.delete_queue().queue_url(&queue.url).send().await;
            }
            Broker::Beanstalk { client } => client.drain(&queue.name),
        }
    }
}
