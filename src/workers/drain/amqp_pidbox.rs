//! Celery's remote control on a RabbitMQ vhost, as kombu's AMQP mailbox does it
//! (kombu 5.7 `pidbox.Mailbox`).
//!
//! - Commands: published to the fanout exchange `celery.pidbox` (routing key empty), the
//!   JSON body of [`command_body`] as the message body, `content_type` `application/json`,
//!   `content_encoding` `utf-8`, headers `clock` and `expires`. Every worker of the vhost
//!   has its own `<node>.celery.pidbox` queue bound there, and runs what names it in
//!   `destination`.
//! - Replies: the worker publishes `{"<node>": <result>}` to the direct exchange
//!   `reply.celery.pidbox` with our id as routing key and the command's `ticket` header.
//!   So before asking we declare our own exclusive, auto-delete queue
//!   `<id>.reply.celery.pidbox` bound there with our id, and consume it until every node
//!   answered or the time is up. The queue goes with our connection.
//!
//! Exchanges: kombu declares both non-durable, not auto-delete, without arguments; a
//! declare with other flags would make RabbitMQ close the channel (PRECONDITION_FAILED),
//! for us now or for a worker later. `celery.pidbox` is only checked (passive declare):
//! a worker declares it when it starts, so when it is missing no worker ever listened on
//! this vhost and there is no one to drain ([`DrainError::NoMailbox`]); publishing to it
//! anyway would only close the channel. `reply.celery.pidbox` is checked and, when
//! missing (nobody ever asked a worker anything here), declared exactly as kombu does:
//! the worker declares it the same way before replying, and our queue must be bound to it
//! before we ask.
//!
//! Every broker operation is bounded by the connect timeout, publishes wait for the
//! broker's confirm (so a refused publish is an error, not silence), and the connection
//! is closed when done.

use std::future::Future;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ExchangeKind};

use super::envelope::{
    CONTENT_ENCODING, CONTENT_TYPE, Command, MAILBOX_EXCHANGE, REPLY_EXCHANGE, Reply, ReplyTo,
    collect_reply, command_body, parse_reply_body, random_id,
};
use super::{COMMAND_TTL, DrainError, command_expiry};
use crate::queue::events::AmqpEvents;
use crate::workers::amqp::{connect, ensure_exchange, is_not_found};

/// How long closing our connection may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// Pidbox messages are not worth keeping over a broker restart (kombu sends them
/// transient too).
const TRANSIENT: u8 = 1;

pub(super) struct AmqpPidbox<'a> {
    source: &'a AmqpEvents,
    timeout: Duration,
}

impl<'a> AmqpPidbox<'a> {
    /// `timeout` bounds connecting and each broker operation.
    pub(super) fn new(source: &'a AmqpEvents, timeout: Duration) -> Self {
        Self { source, timeout }
    }

    /// Sends each command to `destination` without waiting for replies.
    pub(super) async fn cast(
        &self,
        commands: &[Command],
        destination: &[String],
    ) -> Result<(), DrainError> {
        let connection = self.connect().await?;
        let sent = async {
            let channel = self.mailbox_channel(&connection).await?;
            self.confirming(&channel).await?;
            for command in commands {
                self.publish(&channel, command, destination, None).await?;
            }
            Ok(())
        }
        .await;
        close(connection).await;
        sent
    }

    /// Sends each command to `destination` and collects the replies that arrive within
    /// `timeout`, until every node answered every command. Each reply comes back with the
    /// index of the command it answers.
    pub(super) async fn call(
        &self,
        commands: &[Command],
        destination: &[String],
        timeout: Duration,
    ) -> Result<Vec<(usize, Reply)>, DrainError> {
        let connection = self.connect().await?;
        let asked = self.ask(&connection, commands, destination, timeout).await;
        close(connection).await;
        asked
    }

    async fn connect(&self) -> Result<Connection, DrainError> {
        connect(self.source, self.timeout)
            .await
            .map_err(|e| DrainError::Broker {
                broker: self.source.redacted(),
                detail: e.to_string(),
            })
    }

    async fn ask(
        &self,
        connection: &Connection,
        commands: &[Command],
        destination: &[String],
        timeout: Duration,
    ) -> Result<Vec<(usize, Reply)>, DrainError> {
        // Checked first: without workers listening there is no reply exchange to set up.
        self.mailbox_channel(connection).await?;
        let as_kombu = ExchangeDeclareOptions {
            durable: false,
            auto_delete: false,
            ..ExchangeDeclareOptions::default()
        };
        let (channel, declared) = self
            .bounded(
                "checking the reply exchange",
                ensure_exchange(connection, REPLY_EXCHANGE, ExchangeKind::Direct, as_kombu),
            )
            .await?;
        if declared {
            tracing::debug!(broker = %self.source.redacted(), "declared {REPLY_EXCHANGE} as kombu does");
        }
        let oid = random_id();
        let queue = format!("{oid}.{REPLY_EXCHANGE}");
        let ours = QueueDeclareOptions {
            exclusive: true,
            auto_delete: true,
            ..QueueDeclareOptions::default()
        };
        self.bounded(
            "declaring the reply queue",
            channel.queue_declare(queue.as_str().into(), ours, FieldTable::default()),
        )
        .await?;
        self.bounded(
            "binding the reply queue",
            channel.queue_bind(
                queue.as_str().into(),
                REPLY_EXCHANGE.into(),
                oid.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            ),
        )
        .await?;
        let consume = BasicConsumeOptions {
            no_ack: true,
            exclusive: true,
            ..BasicConsumeOptions::default()
        };
        let mut consumer = self
            .bounded(
                "consuming the reply queue",
                channel.basic_consume(
                    queue.as_str().into(),
                    "".into(),
                    consume,
                    FieldTable::default(),
                ),
            )
            .await?;
        self.confirming(&channel).await?;
        let tickets: Vec<String> = commands.iter().map(|_| random_id()).collect();
        for (command, ticket) in commands.iter().zip(&tickets) {
            let reply = ReplyTo {
                oid: oid.clone(),
                ticket: ticket.clone(),
            };
            self.publish(&channel, command, destination, Some(&reply))
                .await?;
        }

        let wanted = commands.len() * destination.len();
        let mut replies = Vec::with_capacity(wanted);
        let deadline = Instant::now() + timeout;
        while replies.len() < wanted {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let delivery = match tokio::time::timeout(left, consumer.next()).await {
                Err(_) => break,
                Ok(Some(Ok(delivery))) => delivery,
                Ok(Some(Err(e))) => return Err(self.error("reading replies", &e)),
                Ok(None) => {
                    return Err(DrainError::Broker {
                        broker: self.source.redacted(),
                        detail: "the broker cancelled our reply consumer".into(),
                    });
                }
            };
            let ticket = header_text(delivery.properties.headers().as_ref(), "ticket");
            let parsed = parse_reply_body(&delivery.data, ticket.as_deref().unwrap_or_default());
            collect_reply(parsed, &tickets, destination, &mut replies);
        }
        Ok(replies)
    }

    /// A channel on which `celery.pidbox` exists; [`DrainError::NoMailbox`] when it does
    /// not (see the module documentation).
    async fn mailbox_channel(&self, connection: &Connection) -> Result<Channel, DrainError> {
        let channel = self
            .bounded("opening a channel", connection.create_channel())
            .await?;
        let passive = ExchangeDeclareOptions {
            passive: true,
            ..ExchangeDeclareOptions::default()
        };
        let checked = channel.exchange_declare(
            MAILBOX_EXCHANGE.into(),
            ExchangeKind::Fanout,
            passive,
            FieldTable::default(),
        );
        match tokio::time::timeout(self.timeout, checked).await {
            Ok(Ok(())) => Ok(channel),
            Ok(Err(e)) if is_not_found(&e) => Err(DrainError::NoMailbox {
                broker: self.source.redacted(),
                exchange: MAILBOX_EXCHANGE.to_string(),
            }),
            Ok(Err(e)) => Err(self.error("checking the mailbox exchange", &e)),
            Err(_) => Err(self.late("checking the mailbox exchange")),
        }
    }

    async fn confirming(&self, channel: &Channel) -> Result<(), DrainError> {
        self.bounded(
            "turning on publisher confirms",
            channel.confirm_select(ConfirmSelectOptions::default()),
        )
        .await
    }

    async fn publish(
        &self,
        channel: &Channel,
        command: &Command,
        destination: &[String],
        reply: Option<&ReplyTo>,
    ) -> Result<(), DrainError> {
        // A command without names reaches every worker of the vhost: never send one.
        if destination.is_empty() {
            return Err(DrainError::Broker {
                broker: self.source.redacted(),
                detail: format!("refusing to send {} to no named worker", command.method()),
            });
        }
        let body = command_body(command, destination, reply).to_string();
        let mut headers = FieldTable::default();
        headers.insert("clock".into(), AMQPValue::LongLongInt(1));
        headers.insert("expires".into(), AMQPValue::Double(command_expiry()));
        // The broker drops the command from a worker's pidbox queue once stale: kombu's
        // AMQP consumer does not look at `expires`.
        let expiration = COMMAND_TTL.as_millis().to_string();
        let properties = BasicProperties::default()
            .with_content_type(CONTENT_TYPE.into())
            .with_content_encoding(CONTENT_ENCODING.into())
            .with_delivery_mode(TRANSIENT)
            .with_expiration(expiration.into())
            .with_headers(headers);
        let doing = format!("publishing {}", command.method());
        let confirm = self
            .bounded(
                &doing,
                channel.basic_publish(
                    MAILBOX_EXCHANGE.into(),
                    "".into(),
                    BasicPublishOptions::default(),
                    body.as_bytes(),
                    properties,
                ),
            )
            .await?;
        match self.bounded(&doing, confirm).await? {
            Confirmation::Ack(_) => Ok(()),
            Confirmation::Nack(_) | Confirmation::NotRequested => Err(DrainError::Broker {
                broker: self.source.redacted(),
                detail: format!("{doing}: the broker did not confirm it"),
            }),
        }
    }

    /// Runs a broker operation within the timeout, naming what it was doing on failure.
    async fn bounded<T>(
        &self,
        doing: &str,
        operation: impl Future<Output = Result<T, lapin::Error>>,
    ) -> Result<T, DrainError> {
        match tokio::time::timeout(self.timeout, operation).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(self.error(doing, &e)),
            Err(_) => Err(self.late(doing)),
        }
    }

    fn error(&self, doing: &str, e: &lapin::Error) -> DrainError {
        DrainError::Broker {
            broker: self.source.redacted(),
            detail: format!("{doing}: {e}"),
        }
    }

    fn late(&self, doing: &str) -> DrainError {
        DrainError::Broker {
            broker: self.source.redacted(),
            detail: format!("{doing}: no answer within {:?}", self.timeout),
        }
    }
}

/// Closes the connection, best effort: the broker drops our reply queue with it anyway.
async fn close(connection: Connection) {
    let closing = connection.close(200, "done".into());
    if let Ok(Err(e)) = tokio::time::timeout(CLOSE_TIMEOUT, closing).await {
        tracing::debug!(error = %e, "closing the remote-control connection");
    }
}

/// A text header (kombu sends `ticket` as a long string).
fn header_text(headers: Option<&FieldTable>, name: &str) -> Option<String> {
    match headers?.inner().get(name)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drain_amqp_ticket_header_is_read_as_either_string_kind() {
        let mut headers = FieldTable::default();
        headers.insert("ticket".into(), AMQPValue::LongString("t-1".into()));
        headers.insert("clock".into(), AMQPValue::LongLongInt(3));
        assert_eq!(
            header_text(Some(&headers), "ticket").as_deref(),
            Some("t-1")
        );
        assert_eq!(header_text(Some(&headers), "clock"), None);
        assert_eq!(header_text(None, "ticket"), None);
        let mut short = FieldTable::default();
        short.insert("ticket".into(), AMQPValue::ShortString("t-2".into()));
        assert_eq!(header_text(Some(&short), "ticket").as_deref(), Some("t-2"));
    }
}
