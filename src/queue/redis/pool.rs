//! One Redis connection per server, database and identity, shared by every queue on it.
//!
//! A `ConnectionManager` is a multiplexed connection: clones share one socket and
//! pipeline concurrent requests on it, and it reconnects by itself after an error. One per
//! queue would cost a socket, a driver task and its buffers for every WPA (about 25 KiB
//! each, most of the controller's memory at thousands of WPAs) for no gain: Redis answers
//! a connection's requests in order, and a poll is a single pipelined round trip.
//!
//! The pool keeps only weak references: a connection closes when the last queue using it
//! is dropped. Connecting is single-flight per key, so thousands of poll loops starting
//! together open one connection, not one each.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, Weak};

use ::redis::aio::ConnectionManager;
use tokio::sync::OnceCell;

use crate::queue::QueueError;

/// What makes two queues able to share a connection.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ConnectionKey {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    pub db: i64,
    pub username: Option<String>,
    pub password: Option<String>,
}

/// A connection slot; queues hold it to keep the connection in the pool.
pub struct Slot {
    cell: OnceCell<ConnectionManager>,
}

/// The shared connections of one registry. Cheap to clone (clones share the pool). Every
/// connection lives on the runtime that opened it, so use one pool per runtime.
#[derive(Clone, Default)]
pub struct RedisConnections {
    slots: Arc<Mutex<HashMap<ConnectionKey, Weak<Slot>>>>,
}

impl RedisConnections {
    /// The connection for `key`, opened with `open` if no live one exists. Concurrent
    /// callers for the same key wait for one `open`; a failed `open` is retried by the
    /// next caller.
    pub async fn get<F, Fut>(
        &self,
        key: ConnectionKey,
        open: F,
    ) -> Result<(Arc<Slot>, ConnectionManager), QueueError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<ConnectionManager, QueueError>>,
    {
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            match slots.get(&key).and_then(Weak::upgrade) {
                Some(slot) => slot,
                None => {
                    // Forget connections nobody uses any more while we are here.
                    slots.retain(|_, weak| weak.strong_count() > 0);
                    let slot = Arc::new(Slot {
                        cell: OnceCell::new(),
                    });
                    slots.insert(key, Arc::downgrade(&slot));
                    slot
                }
            }
        };
        let conn = slot.cell.get_or_try_init(open).await?.clone();
        Ok((slot, conn))
    }

    /// Connections currently open (or being opened) and in use.
    pub fn live(&self) -> usize {
        self.slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|w| w.strong_count() > 0)
            .count()
    }
}

/// The password never shows in `Debug` output (logs, panics).
impl fmt::Debug for ConnectionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionKey")
            .field("tls", &self.tls)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("db", &self.db)
            .field("username", &self.username)
            .field("password", &crate::queue::uri::redacted(&self.password))
            .finish()
    }
}

impl fmt::Debug for RedisConnections {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConnections")
            .field("live", &self.live())
            .finish()
    }
}

/// Options are compared for their settings; which pool they carry is not a setting.
impl PartialEq for RedisConnections {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_the_password() {
        let key = ConnectionKey {
            tls: false,
            host: "redis".into(),
            port: 6379,
            db: 0,
            username: Some("worker".into()),
            password: Some("hunter22".into()),
        };
        let shown = format!("{key:?}");
        assert!(!shown.contains("hunter22"), "{shown}");
        assert!(
            shown.contains("worker") && shown.contains("<redacted>"),
            "{shown}"
        );
    }
}
