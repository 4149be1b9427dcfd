//! Which pod a Dramatiq worker runs in, from the names of its Redis connections.
//!
//! A worker's id (`RedisBroker.broker_id`, a random UUID per process) is all Dramatiq
//! writes to Redis about it; nothing there says where the process runs. Workers that name
//! their connections `dramatiq:<worker id>[:<pod name>]` (`CLIENT SETNAME`, done by the
//! middleware in docs/frameworks/dramatiq.md) can be found in `CLIENT LIST`: the
//! connection's `addr` is the pod's IP, and the name may carry the pod's name.
//!
//! A worker's id belongs to one process for its whole life, so what is learned about an id
//! stays true: `CLIENT LIST` (every connection of the server, so not cheap on a big one)
//! is read again only when a live worker is not known yet, and then at most every
//! [`LOOKUP_EVERY`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// The connection name prefix the middleware sets.
pub const NAME_PREFIX: &str = "dramatiq:";
/// Least time between two `CLIENT LIST` reads of one queue's poller.
pub const LOOKUP_EVERY: Duration = Duration::from_secs(5);

/// Where a worker runs: its pod's name (when its connections say it) and the IP its
/// connections come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    pub pod: Option<String>,
    pub ip: Option<String>,
}

/// Worker id -> place, learned from `CLIENT LIST`.
#[derive(Debug, Default)]
pub struct Places {
    known: HashMap<String, Place>,
    last_lookup: Option<Instant>,
}

impl Places {
    /// Whether `CLIENT LIST` should be read now for these live workers.
    pub fn wants_lookup(&self, live: &[String], now: Instant) -> bool {
        let unknown = live.iter().any(|id| !self.known.contains_key(id));
        unknown
            && self
                .last_lookup
                .is_none_or(|at| now.duration_since(at) >= LOOKUP_EVERY)
    }

    /// Records a `CLIENT LIST` reply read at `now`, and forgets workers no longer live.
    pub fn learn(&mut self, client_list: &str, live: &[String], now: Instant) {
        self.last_lookup = Some(now);
        self.known.retain(|id, _| live.contains(id));
        for (id, place) in parse_client_list(client_list) {
            if live.contains(&id) {
                self.known.insert(id, place);
            }
        }
    }

    /// Counts a failed lookup as a lookup, so that a refused `CLIENT LIST` is not asked
    /// again every poll.
    pub fn failed(&mut self, now: Instant) {
        self.last_lookup = Some(now);
    }

    pub fn get(&self, id: &str) -> Option<&Place> {
        self.known.get(id)
    }
}

/// The named Dramatiq connections of a `CLIENT LIST` reply: one line per connection,
/// `id=7 addr=10.1.2.3:52814 laddr=... fd=9 name=dramatiq:<id>:<pod> ...`.
pub fn parse_client_list(reply: &str) -> Vec<(String, Place)> {
    reply
        .lines()
        .filter_map(|line| {
            let mut name = None;
            let mut addr = None;
            for field in line.split(' ') {
                if let Some(v) = field.strip_prefix("name=") {
                    name = Some(v);
                } else if let Some(v) = field.strip_prefix("addr=") {
                    addr = Some(v);
                }
            }
            let rest = name?.strip_prefix(NAME_PREFIX)?;
            let (id, pod) = match rest.split_once(':') {
                Some((id, pod)) => (id, Some(pod).filter(|p| !p.is_empty())),
                None => (rest, None),
            };
            if id.is_empty() {
                return None;
            }
            Some((
                id.to_string(),
                Place {
                    pod: pod.map(str::to_string),
                    ip: addr.and_then(peer_ip),
                },
            ))
        })
        .collect()
}

/// The IP of an `addr` field: `10.1.2.3:52814`, `[fd00::7]:52814` or `fd00::7:52814`
/// (older servers); `None` for a Unix socket (`/path:0`).
fn peer_ip(addr: &str) -> Option<String> {
    let (host, port) = addr.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    host.parse::<IpAddr>().ok().map(|ip| ip.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIST: &str = "id=3 addr=10.0.0.7:40112 laddr=10.0.0.2:6379 fd=8 name=dramatiq:aaaa-1:worker-5d8f-x2 age=9 db=15 cmd=evalsha\n\
id=4 addr=10.0.0.7:40114 laddr=10.0.0.2:6379 fd=9 name=dramatiq:aaaa-1:worker-5d8f-x2 age=9 db=15 cmd=evalsha\n\
id=5 addr=[fd00::9]:5000 laddr=[fd00::1]:6379 fd=10 name=dramatiq:bbbb-2 age=1 db=15 cmd=evalsha\n\
id=6 addr=10.0.0.8:1234 laddr=10.0.0.2:6379 fd=11 name= age=1 db=15 cmd=client|list\n\
id=7 addr=/tmp/redis.sock:0 laddr=/tmp/redis.sock:0 fd=12 name=dramatiq:cccc-3: age=1\n\
id=8 addr=10.0.0.9:1 fd=13 name=celery@host age=1";

    #[test]
    fn named_connections_give_pod_and_ip() {
        let found = parse_client_list(LIST);
        let place = |id: &str| found.iter().find(|(i, _)| i == id).map(|(_, p)| p.clone());
        assert_eq!(
            place("aaaa-1"),
            Some(Place {
                pod: Some("worker-5d8f-x2".into()),
                ip: Some("10.0.0.7".into())
            })
        );
        assert_eq!(
            place("bbbb-2"),
            Some(Place {
                pod: None,
                ip: Some("fd00::9".into())
            })
        );
        assert_eq!(place("cccc-3"), Some(Place { pod: None, ip: None }));
        // Unnamed and other frameworks' connections are not workers.
        assert_eq!(found.len(), 4);
        assert_eq!(peer_ip("fd00::7:52814").as_deref(), Some("fd00::7"));
    }

    #[test]
    fn lookups_happen_for_unknown_live_workers_at_most_every_few_seconds() {
        let t0 = Instant::now();
        let mut places = Places::default();
        let live = vec!["aaaa-1".to_string(), "bbbb-2".to_string()];
        assert!(places.wants_lookup(&live, t0));
        places.learn(LIST, &live, t0);
        assert_eq!(
            places.get("aaaa-1").and_then(|p| p.ip.as_deref()),
            Some("10.0.0.7")
        );
        // Everything live is known: no lookup however long it has been.
        assert!(!places.wants_lookup(&live, t0 + Duration::from_secs(60)));
        let more = vec!["aaaa-1".to_string(), "dddd-4".to_string()];
        assert!(!places.wants_lookup(&more, t0 + Duration::from_secs(1)));
        assert!(places.wants_lookup(&more, t0 + LOOKUP_EVERY));
        places.learn(LIST, &more, t0 + LOOKUP_EVERY);
        // Workers no longer live are forgotten.
        assert_eq!(places.get("bbbb-2"), None);
        places.failed(t0 + LOOKUP_EVERY * 2);
        assert!(!places.wants_lookup(&more, t0 + LOOKUP_EVERY * 2));
    }
}
