//! One beanstalkd connection per server, shared by every tube polled on it.
//!
//! A connection per tube cost a socket, its buffers and a slot in beanstalkd's client
//! table for every WPA (most of the controller's memory at thousands of WPAs on
//! beanstalkd). beanstalkd answers a connection's commands in order, so one pipelined
//! connection (`connection.rs`) carries every tube's `stats-tube` at once.
//!
//! The pool keeps only weak references: a server's connection closes when the last
//! provider using it is dropped. Connecting is single-flight per server: thousands of poll
//! loops starting together (or finding the connection broken together) open one
//! connection, and when that attempt fails they all get its error instead of trying one
//! after another. A broken connection is replaced on the next request.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};

use super::connection::{Connection, Failure};

type Opening = Shared<BoxFuture<'static, Result<Arc<Connection>, Failure>>>;

enum State {
    Closed,
    Opening(Opening),
    Open(Arc<Connection>),
}

/// One server's connection; providers hold it to keep the connection in the pool.
pub struct Server {
    addr: String,
    state: Mutex<State>,
}

impl Server {
    /// The open connection, or a new one if there is none (or it failed). `fresh` tells
    /// whether the connection was opened by this call (or one it joined), so the caller
    /// knows whether a failure on it can be a stale connection.
    pub(crate) async fn connection(
        &self,
        timeout: Duration,
    ) -> Result<(Arc<Connection>, bool), Failure> {
        let opening = {
            let mut state = self.lock();
            match &*state {
                State::Open(conn) if conn.is_open() => return Ok((Arc::clone(conn), false)),
                State::Opening(opening) => opening.clone(),
                State::Open(_) | State::Closed => {
                    let addr = self.addr.clone();
                    // Boxed and shared: only one caller's poll drives it, the others wait
                    // for its result.
                    let opening =
                        async move { Connection::open(&addr, timeout).await.map(Arc::new) }
                            .boxed()
                            .shared();
                    *state = State::Opening(opening.clone());
                    opening
                }
            }
        };
        let result = opening.clone().await;
        let mut state = self.lock();
        // The first caller back publishes the outcome, unless a newer attempt took over.
        if let State::Opening(current) = &*state
            && current.ptr_eq(&opening)
        {
            *state = match &result {
                Ok(conn) => State::Open(Arc::clone(conn)),
                Err(_) => State::Closed,
            };
        }
        result.map(|conn| (conn, true))
    }

    /// Whether a connection is open.
    fn is_open(&self) -> bool {
        matches!(&*self.lock(), State::Open(conn) if conn.is_open())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is valid at every point; a panic elsewhere must not wedge polling.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The shared beanstalkd connections of one registry. Cheap to clone (clones share the
/// pool). Every connection's task runs on the runtime that opened it, so use one pool per
/// runtime.
///
/// Servers are told apart by `host:port` as written in the queue URI: two spellings of
/// one server (`localhost` and `127.0.0.1`) get a connection each.
#[derive(Clone, Default)]
pub struct BeanstalkConnections {
    servers: Arc<Mutex<HashMap<String, Weak<Server>>>>,
}

impl BeanstalkConnections {
    /// The shared entry for the server at `addr` (`host:port`), created if no provider
    /// holds one. Connects lazily, on the first request.
    pub(crate) fn server(&self, addr: &str) -> Arc<Server> {
        let mut servers = self.lock();
        if let Some(server) = servers.get(addr).and_then(Weak::upgrade) {
            return server;
        }
        // Forget servers nobody uses any more while we are here.
        servers.retain(|_, weak| weak.strong_count() > 0);
        let server = Arc::new(Server {
            addr: addr.to_string(),
            state: Mutex::new(State::Closed),
        });
        servers.insert(addr.to_string(), Arc::downgrade(&server));
        server
    }

    /// Connections currently open and in use.
    pub fn live(&self) -> usize {
        self.lock()
            .values()
            .filter_map(Weak::upgrade)
            .filter(|server| server.is_open())
            .count()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Weak<Server>>> {
        self.servers.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl fmt::Debug for BeanstalkConnections {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BeanstalkConnections")
            .field("live", &self.live())
            .finish()
    }
}

/// Options are compared for their settings; which pool they carry is not a setting.
impl PartialEq for BeanstalkConnections {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
