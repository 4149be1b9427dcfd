//! Celery's remote control on a Redis broker, as kombu's virtual transport does it.
//!
//! - Commands: `PUBLISH <global_keyprefix>/<db>.celery.pidbox <envelope>` (the fanout
//!   exchange as a pub/sub channel; every worker of the database PSUBSCRIBEs to it, and
//!   runs what names it in `destination`).
//! - Replies: the worker publishes to the direct exchange `reply.celery.pidbox` with our
//!   id as routing key; kombu looks the route up in the set
//!   `<prefix>_kombu.binding.reply.celery.pidbox` (members `<routing key>\x06\x16\x06\x16<queue>`)
//!   and LPUSHes the reply envelope on `<prefix><queue>`. So to be answered we add that
//!   binding, BRPOP the list, and remove both when done.

use std::time::{Duration, Instant};

use redis::AsyncConnectionConfig;
use redis::aio::MultiplexedConnection;

use super::envelope::{
    Command, MAILBOX_EXCHANGE, REPLY_EXCHANGE, Reply, ReplyTo, collect_reply, command_body,
    parse_redis_reply, random_id, redis_envelope,
};
use super::{DrainError, command_expiry};
use crate::queue::events::RedisEvents;
use crate::queue::redis::pool::ConnectionKey;

/// kombu's separator between a binding's routing key, pattern and queue.
const BINDING_SEPARATOR: &str = "\x06\x16";

pub(super) struct RedisPidbox<'a> {
    source: &'a RedisEvents,
    connect_timeout: Duration,
}

impl<'a> RedisPidbox<'a> {
    pub(super) fn new(source: &'a RedisEvents, connect_timeout: Duration) -> Self {
        Self {
            source,
            connect_timeout,
        }
    }

    /// The channel commands are PUBLISHed on.
    pub(super) fn channel(&self) -> String {
        format!(
            "{}/{}.{MAILBOX_EXCHANGE}",
            self.source.prefix, self.source.db
        )
    }

    async fn connect(&self) -> Result<MultiplexedConnection, DrainError> {
        let broker = self.source.redacted();
        let key = ConnectionKey {
            tls: self.source.tls,
            host: self.source.host.clone(),
            port: self.source.port,
            db: self.source.db,
            username: self.source.username.clone(),
            password: self.source.password.clone(),
        };
        let client =
            crate::queue::redis::client(&key, &broker).map_err(|e| DrainError::Broker {
                broker: broker.clone(),
                detail: e.to_string(),
            })?;
        // Replies are read with BRPOP, which blocks up to a second: room for it.
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(self.connect_timeout + Duration::from_secs(2)));
        client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| self.error(&e))
    }

    fn error(&self, e: &redis::RedisError) -> DrainError {
        DrainError::Broker {
            broker: self.source.redacted(),
            detail: e.to_string(),
        }
    }

    async fn publish(
        &self,
        connection: &mut MultiplexedConnection,
        command: &Command,
        destination: &[String],
        reply: Option<&ReplyTo>,
    ) -> Result<(), DrainError> {
        let envelope = redis_envelope(
            &command_body(command, destination, reply),
            command_expiry(),
            &random_id(),
        );
        redis::cmd("PUBLISH")
            .arg(self.channel())
            .arg(envelope)
            .query_async::<i64>(connection)
            .await
            .map_err(|e| self.error(&e))?;
        Ok(())
    }

    /// Sends each command to `destination` without waiting for replies.
    pub(super) async fn cast(
        &self,
        commands: &[Command],
        destination: &[String],
    ) -> Result<(), DrainError> {
        let mut connection = self.connect().await?;
        for command in commands {
            self.publish(&mut connection, command, destination, None)
                .await?;
        }
        Ok(())
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
        let mut connection = self.connect().await?;
        let oid = random_id();
        let queue = format!("{oid}.{REPLY_EXCHANGE}");
        let binding_key = format!("{}_kombu.binding.{REPLY_EXCHANGE}", self.source.prefix);
        let member = [oid.as_str(), "", queue.as_str()].join(BINDING_SEPARATOR);
        let list = format!("{}{queue}", self.source.prefix);
        redis::cmd("SADD")
            .arg(&binding_key)
            .arg(&member)
            .query_async::<i64>(&mut connection)
            .await
            .map_err(|e| self.error(&e))?;
        let asked = self
            .ask(&mut connection, commands, destination, &oid, &list, timeout)
            .await;
        // The binding would otherwise stay in the broker for good.
        let cleanup = redis::pipe()
            .cmd("SREM")
            .arg(&binding_key)
            .arg(&member)
            .ignore()
            .cmd("DEL")
            .arg(&list)
            .ignore()
            .query_async::<()>(&mut connection)
            .await;
        if let Err(e) = cleanup {
            tracing::debug!(error = %e, "cannot remove the pidbox reply binding");
        }
        asked
    }

    async fn ask(
        &self,
        connection: &mut MultiplexedConnection,
        commands: &[Command],
        destination: &[String],
        oid: &str,
        list: &str,
        timeout: Duration,
    ) -> Result<Vec<(usize, Reply)>, DrainError> {
        let tickets: Vec<String> = commands.iter().map(|_| random_id()).collect();
        for (command, ticket) in commands.iter().zip(&tickets) {
            let reply = ReplyTo {
                oid: oid.to_string(),
                ticket: ticket.clone(),
            };
            self.publish(connection, command, destination, Some(&reply))
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
            let wait = left.min(Duration::from_secs(1)).as_secs_f64().max(0.01);
            let popped: Option<(String, Vec<u8>)> = redis::cmd("BRPOP")
                .arg(list)
                .arg(wait)
                .query_async(connection)
                .await
                .map_err(|e| self.error(&e))?;
            let Some((_, payload)) = popped else {
                continue;
            };
            collect_reply(
                parse_redis_reply(&payload),
                &tickets,
                destination,
                &mut replies,
            );
        }
        Ok(replies)
    }
}
