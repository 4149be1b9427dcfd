//! RabbitMQ helpers for tests: AMQP connections, queues, publishing, holding
//! unacknowledged deliveries, the management API, and the Celery producer script.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use futures::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::uri::{AMQPAuthority, AMQPQueryString, AMQPScheme, AMQPUri, AMQPUserInfo};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, Consumer};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::json;
use wpa::queue::rabbitmq::uri::AmqpUri;

pub const AMQP_PORT: u16 = 5672;
pub const MANAGEMENT: &str = "http://127.0.0.1:15672";

/// The provider's URI for `queue` on `port` in `vhost`, as guest/guest.
pub fn amqp_uri(port: u16, vhost: &str, queue: &str, management: Option<&str>) -> AmqpUri {
    AmqpUri {
        tls: false,
        host: "127.0.0.1".into(),
        port,
        vhost: vhost.into(),
        queue: queue.into(),
        username: Some("guest".into()),
        password: Some("guest".into()),
        management: management.map(String::from),
    }
}

/// A test-side AMQP connection and channel.
pub async fn open(port: u16, vhost: &str) -> (Connection, Channel) {
    let uri = AMQPUri {
        scheme: AMQPScheme::AMQP,
        authority: AMQPAuthority {
            userinfo: AMQPUserInfo {
                username: "guest".into(),
                password: "guest".into(),
            },
            host: "127.0.0.1".into(),
            port,
        },
        vhost: vhost.into(),
        query: AMQPQueryString::default(),
    };
    let connection = Connection::connect_uri(uri, ConnectionProperties::default())
        .await
        .expect("AMQP connect");
    let channel = connection.create_channel().await.expect("AMQP channel");
    (connection, channel)
}

pub async fn declare(channel: &Channel, queue: &str, durable: bool) {
    let options = QueueDeclareOptions {
        durable,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(queue.into(), options, FieldTable::default())
        .await
        .expect("queue.declare");
}

pub async fn delete(channel: &Channel, queue: &str) {
    let _ = channel
        .queue_delete(queue.into(), QueueDeleteOptions::default())
        .await;
}

/// Publishes `n` persistent messages to `queue` via the default exchange and waits for
/// the broker's confirms.
pub async fn publish(channel: &Channel, queue: &str, n: usize) {
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirm.select");
    for i in 0..n {
        let confirm = channel
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                format!("message {i}").as_bytes(),
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .expect("basic.publish");
        confirm.await.expect("publisher confirm");
    }
}

/// A consumer with manual acks and `prefetch` that holds every delivery it gets.
pub struct HeldDeliveries {
    _connection: Connection,
    _consumer: Consumer,
}

pub async fn hold_deliveries(port: u16, vhost: &str, queue: &str, prefetch: u16) -> HeldDeliveries {
    let (connection, channel) = open(port, vhost).await;
    channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await
        .expect("basic.qos");
    let mut consumer = channel
        .basic_consume(
            queue.into(),
            "wpa-test-holder".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("basic.consume");
    // Take the prefetched deliveries off the wire and keep them unacknowledged.
    for _ in 0..prefetch {
        let delivery = tokio::time::timeout(Duration::from_secs(30), consumer.next()).await;
        assert!(
            matches!(delivery, Ok(Some(Ok(_)))),
            "no delivery for the holder"
        );
    }
    HeldDeliveries {
        _connection: connection,
        _consumer: consumer,
    }
}

impl HeldDeliveries {
    /// Closes the connection now (dropping it closes it only eventually); unacknowledged
    /// deliveries go back to the queue.
    pub async fn close(self) {
        self._connection
            .close(200, "test done".into())
            .await
            .expect("connection.close");
    }
}

/// A consumer with manual acks and prefetch 1 on its own connection that got nothing yet.
pub async fn idle_consumer(port: u16, vhost: &str, queue: &str) -> HeldDeliveries {
    let (connection, channel) = open(port, vhost).await;
    channel
        .basic_qos(1, BasicQosOptions::default())
        .await
        .expect("basic.qos");
    let consumer = channel
        .basic_consume(
            queue.into(),
            "wpa-test-idle".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("basic.consume");
    HeldDeliveries {
        _connection: connection,
        _consumer: consumer,
    }
}

fn segment(s: &str) -> String {
    utf8_percent_encode(s, NON_ALPHANUMERIC).to_string()
}

/// Creates `vhost` and gives guest full permissions on it.
pub async fn create_vhost(vhost: &str) {
    let http = reqwest::Client::new();
    let v = segment(vhost);
    let r = http
        .put(format!("{MANAGEMENT}/api/vhosts/{v}"))
        .basic_auth("guest", Some("guest"))
        .send()
        .await;
    assert!(r.expect("PUT vhost").status().is_success());
    let r = http
        .put(format!("{MANAGEMENT}/api/permissions/{v}/guest"))
        .basic_auth("guest", Some("guest"))
        .json(&json!({"configure": ".*", "write": ".*", "read": ".*"}))
        .send()
        .await;
    assert!(r.expect("PUT permissions").status().is_success());
}

pub async fn delete_vhost(vhost: &str) {
    let _ = reqwest::Client::new()
        .delete(format!("{MANAGEMENT}/api/vhosts/{}", segment(vhost)))
        .basic_auth("guest", Some("guest"))
        .send()
        .await;
}

/// Enqueues `count` Celery tasks on `queue` with the committed producer script.
pub fn celery_produce(queue: &str, count: usize, priority: Option<u8>, max_priority: Option<u8>) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/celery/produce.py");
    let mut cmd = Command::new("python3");
    cmd.arg(script)
        .args([
            "--broker",
            "amqp://guest:guest@127.0.0.1:5672//",
            "--queue",
            queue,
        ])
        .args(["--count", &count.to_string()]);
    if let Some(p) = priority {
        cmd.args(["--priority", &p.to_string()]);
    }
    if let Some(m) = max_priority {
        cmd.args(["--max-priority", &m.to_string()]);
    }
    let out = cmd.output().expect("run produce.py");
    assert!(
        out.status.success(),
        "produce.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("\"sent\": {count}")),
        "produce.py said {stdout}"
    );
}

/// Force-closes every client connection on `vhost` through the management API (as an
/// operator or a broker restart would); returns how many were closed.
pub async fn close_connections(vhost: &str) -> usize {
    let http = reqwest::Client::new();
    let listed: Vec<serde_json::Value> = http
        .get(format!(
            "{MANAGEMENT}/api/vhosts/{}/connections",
            segment(vhost)
        ))
        .basic_auth("guest", Some("guest"))
        .send()
        .await
        .expect("GET connections")
        .json()
        .await
        .expect("connections JSON");
    let mut closed = 0;
    for connection in listed {
        let name = connection["name"].as_str().expect("connection name");
        let r = http
            .delete(format!("{MANAGEMENT}/api/connections/{}", segment(name)))
            .basic_auth("guest", Some("guest"))
            .send()
            .await
            .expect("DELETE connection");
        assert!(r.status().is_success(), "closing {name}: {}", r.status());
        closed += 1;
    }
    closed
}
