//! One Redis pub/sub connection's worth of worker events.
//!
//! A subscribed connection can do nothing but pub/sub, so this is a dedicated connection
//! (not the pooled one the queue providers share). It PSUBSCRIBEs to
//! `<prefix>/<db>.celeryev/worker.*` ([`RedisEvents::channel_pattern`]).
//!
//! A silent pub/sub connection looks the same whether no worker runs or the server is
//! gone behind a dead network path, so the listener PINGs every
//! [`ListenSettings::ping_interval`] and gives the connection up when no answer comes
//! within the connect timeout.

use futures::StreamExt as _;
use tokio::sync::{mpsc, watch};

use super::forward::{Closed, Forwarder};
use super::parse::parse_redis_message;
use super::settings::ListenSettings;
use super::{ListenError, WorkerBeat};
use crate::queue::events::RedisEvents;
use crate::queue::redis::pool::ConnectionKey;

/// Listens until the connection fails (`Err`) or nobody receives `beats` any more
/// (`Ok`). `subscribed` is incremented once the subscription is in place.
pub async fn listen(
    source: &RedisEvents,
    beats: &mpsc::Sender<WorkerBeat>,
    subscribed: &watch::Sender<u64>,
    settings: &ListenSettings,
) -> Result<(), ListenError> {
    let broker = source.redacted();
    let key = ConnectionKey {
        tls: source.tls,
        host: source.host.clone(),
        port: source.port,
        db: source.db,
        username: source.username.clone(),
        password: source.password.clone(),
    };
    let client = crate::queue::redis::client(&key, &broker)
        .map_err(|e| ListenError::connecting(e, &broker))?;
    let connect = async {
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.psubscribe(source.channel_pattern()).await?;
        Ok::<_, ::redis::RedisError>(pubsub)
    };
    let pubsub = match tokio::time::timeout(settings.connect_timeout, connect).await {
        Ok(Ok(pubsub)) => pubsub,
        Ok(Err(e)) => {
            return Err(ListenError::connecting(
                crate::queue::redis::map_error(&broker, &e),
                &broker,
            ));
        }
        Err(_) => {
            return Err(ListenError::Subscribe {
                broker,
                detail: format!("no subscription within {:?}", settings.connect_timeout),
            });
        }
    };
    tracing::debug!(broker = %broker, pattern = %source.channel_pattern(), "subscribed to worker events");
    subscribed.send_modify(|n| *n = n.wrapping_add(1));

    let (mut sink, mut messages) = pubsub.split();
    let mut forwarder = Forwarder::new(beats, &broker);
    let mut ping = tokio::time::interval(settings.ping_interval);
    // The first tick is immediate; the connection has just answered PSUBSCRIBE.
    ping.tick().await;
    let lost = |detail: String| ListenError::Lost {
        broker: broker.clone(),
        detail,
    };
    loop {
        tokio::select! {
            message = messages.next() => {
                let Some(message) = message else {
                    return Err(lost("the server closed the connection".into()));
                };
                let parsed = parse_redis_message(message.get_payload_bytes());
                if let Err(Closed) = forwarder.forward(parsed, message.get_channel_name()).await {
                    return Ok(());
                }
            }
            _ = ping.tick() => {
                let answer = tokio::time::timeout(
                    settings.connect_timeout,
                    sink.ping::<::redis::Value>(),
                )
                .await;
                match answer {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return Err(lost(format!("PING failed: {e}"))),
                    Err(_) => {
                        return Err(lost(format!(
                            "no answer to PING within {:?}",
                            settings.connect_timeout
                        )));
                    }
                }
            }
            () = beats.closed() => return Ok(()),
        }
    }
}
