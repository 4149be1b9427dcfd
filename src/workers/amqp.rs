//! One AMQP connection's worth of worker events.
//!
//! Binds an exclusive, auto-delete, server-named queue to the `celeryev` topic exchange with
//! `worker.#` and consumes it without acks: an event is only worth anything now, and the
//! queue goes away with the connection.
//!
//! The exchange only exists once a Celery worker (or `celery events`) has declared it. The
//! listener first checks it passively; when it is missing (no worker ever ran on this
//! vhost: typical for a deployment scaled from zero), it declares it exactly as Celery does
//! (topic, durable, not auto-delete, no arguments), so that a worker started later finds it
//! as it expects and events flow from that worker's first `worker-online`. Waiting for a
//! worker to create it instead would miss that event and cost a retry period. A user
//! without configure permission on the exchange gets `Denied` and is retried with backoff,
//! which picks the exchange up once a worker created it.

use std::time::Duration;

use futures::StreamExt as _;
use lapin::options::{
    BasicConsumeOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};
use tokio::sync::{mpsc, watch};

use super::forward::{Closed, Forwarder};
use super::parse::parse_amqp_message;
use super::settings::ListenSettings;
use super::{ListenError, WorkerBeat};
use crate::queue::QueueError;
use crate::queue::events::{AmqpEvents, EVENT_EXCHANGE, WORKER_ROUTING_PREFIX};
use crate::queue::rabbitmq::{amqp_uri, map_amqp_error};

/// How long a clean close may take when the listener ends.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// Listens until the connection fails (`Err`) or nobody receives `beats` any more
/// (`Ok`). `subscribed` is incremented once the consumer is in place.
pub async fn listen(
    source: &AmqpEvents,
    beats: &mpsc::Sender<WorkerBeat>,
    subscribed: &watch::Sender<u64>,
    settings: &ListenSettings,
) -> Result<(), ListenError> {
    let broker = source.redacted();
    let connection = connect(source, settings.connect_timeout)
        .await
        .map_err(|e| ListenError::connecting(e, &broker))?;
    let result = consume(&connection, &broker, beats, subscribed, settings).await;
    // Best effort: the broker drops the queue with the connection either way.
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, connection.close(200, "done".into())).await;
    result
}

async fn consume(
    connection: &Connection,
    broker: &str,
    beats: &mpsc::Sender<WorkerBeat>,
    subscribed: &watch::Sender<u64>,
    settings: &ListenSettings,
) -> Result<(), ListenError> {
    let setup = async {
        let as_celery = ExchangeDeclareOptions {
            durable: true,
            auto_delete: false,
            ..ExchangeDeclareOptions::default()
        };
        let (channel, declared) =
            ensure_exchange(connection, EVENT_EXCHANGE, ExchangeKind::Topic, as_celery).await?;
        if declared {
            tracing::info!("declared the celeryev exchange as Celery does: no worker had yet");
        }
        let queue = channel
            .queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
        channel
            .queue_bind(
                queue.name().clone(),
                EVENT_EXCHANGE.into(),
                format!("{WORKER_ROUTING_PREFIX}#").into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let consumer = channel
            .basic_consume(
                queue.name().clone(),
                "".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    exclusive: true,
                    ..BasicConsumeOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
        Ok::<_, lapin::Error>(consumer)
    };
    let mut consumer = match tokio::time::timeout(settings.connect_timeout, setup).await {
        Ok(Ok(consumer)) => consumer,
        Ok(Err(e)) => return Err(amqp_error(broker, &e)),
        Err(_) => {
            return Err(ListenError::Subscribe {
                broker: broker.to_string(),
                detail: format!(
                    "the event queue was not set up within {:?}",
                    settings.connect_timeout
                ),
            });
        }
    };
    tracing::debug!(broker = %broker, "consuming worker events");
    subscribed.send_modify(|n| *n = n.wrapping_add(1));

    let mut forwarder = Forwarder::new(beats, broker);
    let lost = |detail: String| ListenError::Lost {
        broker: broker.to_string(),
        detail,
    };
    loop {
        tokio::select! {
            delivery = consumer.next() => {
                let delivery = match delivery {
                    Some(Ok(delivery)) => delivery,
                    Some(Err(e)) => return Err(lost(e.to_string())),
                    None => return Err(lost("the broker cancelled the consumer".into())),
                };
                let properties = &delivery.properties;
                let parsed = parse_amqp_message(
                    &delivery.data,
                    properties.content_type().as_ref().map(|s| s.as_str()),
                    properties.content_encoding().as_ref().map(|s| s.as_str()),
                );
                if let Err(Closed) = forwarder.forward(parsed, delivery.routing_key.as_str()).await {
                    return Ok(());
                }
            }
            () = beats.closed() => return Ok(()),
        }
    }
}

/// Opens an AMQP connection to the vhost of `source` with its identity, within `timeout`.
/// Errors name the broker redacted.
pub(crate) async fn connect(
    source: &AmqpEvents,
    timeout: Duration,
) -> Result<Connection, QueueError> {
    let broker = source.redacted();
    let uri = amqp_uri(
        source.tls,
        &source.host,
        source.port,
        &source.vhost,
        (&source.username, &source.password),
        timeout,
    );
    let connecting = Connection::connect_uri(uri, ConnectionProperties::default());
    match tokio::time::timeout(timeout, connecting).await {
        Ok(Ok(connection)) => Ok(connection),
        Ok(Err(e)) => Err(map_amqp_error(&broker, &e)),
        Err(_) => Err(QueueError::Unavailable {
            queue: broker,
            detail: format!("no AMQP connection within {timeout:?}"),
        }),
    }
}

/// A channel on which the exchange `name` exists, and whether we declared it: checked
/// passively first (no configure permission needed), declared with `as_declared` only when
/// missing. `as_declared` must be exactly what its owner declares it with, or the owner's
/// own declare fails later with PRECONDITION_FAILED.
pub(crate) async fn ensure_exchange(
    connection: &Connection,
    name: &str,
    kind: ExchangeKind,
    as_declared: ExchangeDeclareOptions,
) -> Result<(Channel, bool), lapin::Error> {
    let channel = connection.create_channel().await?;
    let passive = ExchangeDeclareOptions {
        passive: true,
        ..ExchangeDeclareOptions::default()
    };
    let checked = channel
        .exchange_declare(name.into(), kind.clone(), passive, FieldTable::default())
        .await;
    match checked {
        Ok(()) => Ok((channel, false)),
        Err(e) if is_not_found(&e) => {
            // The failed passive declare closed that channel.
            let channel = connection.create_channel().await?;
            channel
                .exchange_declare(name.into(), kind, as_declared, FieldTable::default())
                .await?;
            Ok((channel, true))
        }
        Err(e) => Err(e),
    }
}

/// The broker answered NOT_FOUND (a passive declare of something missing).
pub(crate) fn is_not_found(e: &lapin::Error) -> bool {
    matches!(map_amqp_error("", e), QueueError::NotFound { .. })
}

fn amqp_error(broker: &str, e: &lapin::Error) -> ListenError {
    ListenError::connecting(map_amqp_error(broker, e), broker)
}
