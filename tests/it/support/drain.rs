//! The broker a drain test's Celery workers use, Redis or RabbitMQ, behind one face: the
//! Celery broker URL, the WPA's queue URI, the remote control, and what waits in a queue.
//! A RabbitMQ broker gets a vhost of its own, so that tests never see each other's
//! workers or pidbox messages; the task ledger stays on Redis either way.

use std::time::{Duration, Instant};

use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use redis::Commands;
use wpa::queue::{Credentials, QueueUri};
use wpa::workers::drain::{DrainError, DrainVia, Mailbox, NodeHolding};

use super::broker_procs::unique;
use super::brokers::{redis_broker, redis_conn, redis_port};
use super::brokers_amqp::{AMQP_PORT, MANAGEMENT, create_vhost, delete_vhost, open};

#[derive(Clone)]
pub enum CeleryBroker {
    /// Database 0 of the shared Redis, with kombu's `global_keyprefix` (may be empty).
    Redis { port: u16, prefix: String },
    /// A vhost of the test's own on the shared RabbitMQ; the remote control logs in as
    /// `user` (name, password) when set, else as guest.
    Rabbitmq {
        vhost: String,
        user: Option<(String, String)>,
    },
}

/// What docs/worker-aware-scale-in.md says the controller's RabbitMQ user needs for the
/// drain (configure, write, read).
pub const DRAIN_PERMISSIONS: [&str; 3] = [
    r"^([0-9a-f-]+\.)?reply\.celery\.pidbox$",
    r"^(celery\.pidbox|[0-9a-f-]+\.reply\.celery\.pidbox)$",
    r"^([0-9a-f-]+\.)?reply\.celery\.pidbox$",
];

impl CeleryBroker {
    pub fn redis(prefix: &str) -> Self {
        CeleryBroker::Redis {
            port: redis_port(),
            prefix: prefix.to_string(),
        }
    }

    /// A fresh vhost, guest with every permission on it.
    pub async fn rabbitmq() -> Self {
        let vhost = unique("wpa-drain");
        create_vhost(&vhost).await;
        CeleryBroker::Rabbitmq { vhost, user: None }
    }

    /// The remote control logs in as a new user with only `permissions` (configure,
    /// write, read) on the vhost (RabbitMQ).
    pub async fn with_user(self, permissions: [&str; 3]) -> Self {
        let CeleryBroker::Rabbitmq { vhost, user } = self else {
            return self;
        };
        if let Some((old, _)) = user {
            delete_user(&old).await;
        }
        let name = unique("wpa-drain-user");
        let password = unique("pw");
        let http = reqwest::Client::new();
        let r = http
            .put(format!("{MANAGEMENT}/api/users/{name}"))
            .basic_auth("guest", Some("guest"))
            .json(&serde_json::json!({"password": password, "tags": ""}))
            .send()
            .await;
        assert!(r.expect("PUT user").status().is_success());
        let [configure, write, read] = permissions;
        let r = http
            .put(format!("{MANAGEMENT}/api/permissions/{vhost}/{name}"))
            .basic_auth("guest", Some("guest"))
            .json(&serde_json::json!({"configure": configure, "write": write, "read": read}))
            .send()
            .await;
        assert!(r.expect("PUT permissions").status().is_success());
        CeleryBroker::Rabbitmq {
            vhost,
            user: Some((name, password)),
        }
    }

    /// Where tasks are recorded: Redis, whatever the broker.
    pub fn ledger_url(&self) -> String {
        redis_broker(redis_port(), 0)
    }

    /// The Celery broker URL.
    pub fn url(&self) -> String {
        match self {
            CeleryBroker::Redis { port, .. } => redis_broker(*port, 0),
            CeleryBroker::Rabbitmq { vhost, .. } => {
                format!("amqp://guest:guest@127.0.0.1:{AMQP_PORT}/{vhost}")
            }
        }
    }

    /// The worker's environment for this broker (kombu's key prefix on Redis).
    pub fn worker_env(&self) -> Vec<(String, String)> {
        match self {
            CeleryBroker::Redis { prefix, .. } if !prefix.is_empty() => {
                vec![("WPA_TEST_KEYPREFIX".into(), prefix.clone())]
            }
            _ => Vec::new(),
        }
    }

    /// The producer's extra arguments for this broker.
    pub fn produce_args(&self) -> Vec<String> {
        match self {
            CeleryBroker::Redis { prefix, .. } if !prefix.is_empty() => {
                vec!["--prefix".into(), prefix.clone()]
            }
            _ => Vec::new(),
        }
    }

    /// The WPA's queue URI for `queue` (RabbitMQ with its management API).
    pub fn queue_uri(&self, queue: &str) -> String {
        match self {
            CeleryBroker::Redis { port, prefix } if prefix.is_empty() => {
                format!("redis://127.0.0.1:{port}/0/{queue}")
            }
            CeleryBroker::Redis { port, prefix } => {
                format!("redis://127.0.0.1:{port}/0/{queue}?prefix={prefix}")
            }
            CeleryBroker::Rabbitmq { vhost, .. } => format!(
                "amqp://guest:guest@127.0.0.1:{AMQP_PORT}/{vhost}/{queue}?management={MANAGEMENT}"
            ),
        }
    }

    /// The remote control of the workers reading `queue`, as the controller builds it
    /// (with the user's credentials as a Secret gives them, when there is one).
    pub fn mailbox(&self, queue: &str) -> Mailbox {
        let credentials = match self {
            CeleryBroker::Rabbitmq {
                user: Some((name, password)),
                ..
            } => Credentials {
                username: Some(name.clone()),
                password: Some(password.clone()),
                ..Credentials::default()
            },
            _ => Credentials::default(),
        };
        let source = QueueUri::parse(&self.queue_uri(queue))
            .expect("test URI parses")
            .celery_events(&credentials)
            .expect("a Celery broker has a pidbox");
        Mailbox::new(DrainVia::Celery(source), Duration::from_secs(5))
    }

    /// How many messages wait in `queue` (not handed to any worker).
    pub async fn waiting(&self, queue: &str) -> u64 {
        match self {
            CeleryBroker::Redis { port, prefix } => {
                let mut conn = redis_conn(*port, 0);
                conn.llen(format!("{prefix}{queue}")).expect("LLEN")
            }
            CeleryBroker::Rabbitmq { vhost, .. } => {
                let (connection, channel) = open(AMQP_PORT, vhost).await;
                let passive = QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                };
                let declared = channel
                    .queue_declare(queue.into(), passive, FieldTable::default())
                    .await
                    .expect("passive queue.declare");
                let _ = connection.close(200, "done".into()).await;
                u64::from(declared.message_count())
            }
        }
    }

    /// Moves every task waiting in `stage` onto `side` at once: tasks staged ahead (a
    /// producer takes a second to start) arrive on `side` within milliseconds.
    pub async fn move_all(&self, stage: &str, side: &str) {
        match self {
            CeleryBroker::Redis { port, prefix } => {
                let mut conn = redis_conn(*port, 0);
                while redis::cmd("RPOPLPUSH")
                    .arg(format!("{prefix}{stage}"))
                    .arg(format!("{prefix}{side}"))
                    .query::<Option<String>>(&mut conn)
                    .expect("RPOPLPUSH")
                    .is_some()
                {}
            }
            CeleryBroker::Rabbitmq { vhost, .. } => {
                let (connection, channel) = open(AMQP_PORT, vhost).await;
                channel
                    .confirm_select(ConfirmSelectOptions::default())
                    .await
                    .expect("confirm.select");
                let get = BasicGetOptions { no_ack: true };
                while let Some(message) = channel
                    .basic_get(stage.into(), get)
                    .await
                    .expect("basic.get")
                {
                    // The same message, Celery's headers and all, through the default
                    // exchange to the side queue.
                    let delivery = message.delivery;
                    channel
                        .basic_publish(
                            "".into(),
                            side.into(),
                            BasicPublishOptions::default(),
                            &delivery.data,
                            delivery.properties.clone(),
                        )
                        .await
                        .expect("basic.publish")
                        .await
                        .expect("publisher confirm");
                }
                let _ = connection.close(200, "done".into()).await;
            }
        }
    }

    /// Drops the test's vhost and user (RabbitMQ).
    pub async fn remove(self) {
        if let CeleryBroker::Rabbitmq { vhost, user } = self {
            delete_vhost(&vhost).await;
            if let Some((name, _)) = user {
                delete_user(&name).await;
            }
        }
    }
}

async fn delete_user(name: &str) {
    let _ = reqwest::Client::new()
        .delete(format!("{MANAGEMENT}/api/users/{name}"))
        .basic_auth("guest", Some("guest"))
        .send()
        .await;
}

/// How long a worker gets to answer in the tests.
const ASK: Duration = Duration::from_secs(3);

/// Asks until `check` holds for the node's answer (a Celery node name, or a pod for
/// Sidekiq); panics after `within`.
pub async fn until_holding(
    mailbox: &Mailbox,
    node: &str,
    within: Duration,
    what: &str,
    check: impl Fn(&NodeHolding) -> bool,
) -> NodeHolding {
    let nodes = vec![node.to_string()];
    let deadline = Instant::now() + within;
    let mut last = None;
    while Instant::now() < deadline {
        let answer = match mailbox.holdings(&nodes, ASK).await {
            Ok(answer) => answer,
            // A starting worker has not declared its mailbox yet (RabbitMQ).
            Err(DrainError::NoMailbox { .. }) => Vec::new(),
            Err(e) => panic!("ask the worker: {e}"),
        };
        if let Some(holding) = answer.into_iter().next() {
            if check(&holding) {
                return holding;
            }
            last = Some(holding);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    panic!("{node}: not {what} within {within:?}; last answer {last:?}");
}
