//! Finding a BullMQ queue's workers in `CLIENT LIST`.
//!
//! Every BullMQ Worker opens a blocking connection for fetching jobs and names it
//! (`CLIENT SETNAME`, BullMQ's `createBlockingConnection`) `<prefix>:<base64(queue)>`, or
//! `<prefix>:<base64(queue)>:w:<name>` when the Worker was given a `name`. `Queue.getWorkers()`
//! finds workers the same way. Redis refuses spaces in connection names, so a `CLIENT LIST`
//! line is `key=value` fields separated by spaces.

/// One worker's blocking connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerConnection {
    /// The Worker's `name` option, when it has one.
    pub name: Option<String>,
    /// The peer address's host: the pod IP when the worker runs in a pod and connects
    /// directly. `None` for a Unix socket.
    pub ip: Option<String>,
}

/// The connections of `CLIENT LIST` output (`text`) that belong to workers of the queue
/// whose connection name is `base` (`<prefix>:<base64(queue)>`).
pub fn worker_connections(text: &str, base: &str) -> Vec<WorkerConnection> {
    text.lines()
        .filter_map(|line| {
            let mut name = None;
            let mut addr = None;
            for field in line.split_whitespace() {
                match field.split_once('=') {
                    Some(("name", value)) => name = Some(value),
                    Some(("addr", value)) => addr = Some(value),
                    _ => {}
                }
            }
            let worker = worker_name(name?, base)?;
            Some(WorkerConnection {
                name: worker.map(str::to_string),
                ip: addr.and_then(peer_host),
            })
        })
        .collect()
}

/// `Some(None)` for an unnamed worker of the queue, `Some(Some(name))` for a named one,
/// `None` for any other connection (another queue's, `QueueEvents`' `...:qe`, ...).
fn worker_name<'a>(connection: &'a str, base: &str) -> Option<Option<&'a str>> {
    let rest = connection.strip_prefix(base)?;
    if rest.is_empty() {
        return Some(None);
    }
    // base64 has no `:`, so `:w:` right after it cannot be part of another queue's name.
    let name = rest.strip_prefix(":w:")?;
    Some(Some(name).filter(|n| !n.is_empty()))
}

/// The host of Redis' `addr` field: `10.0.0.7:52814` or `[fd00::7]:52814`; a Unix socket
/// (`/run/redis.sock:0`) has none.
fn peer_host(addr: &str) -> Option<String> {
    let (host, _port) = addr.rsplit_once(':')?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() || host.starts_with('/') {
        return None;
    }
    Some(host.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    // Lines as Redis 7 prints them (trimmed of fields that do not matter here).
    const LIST: &str = "\
id=3 addr=10.1.2.3:40312 laddr=10.0.0.9:6379 fd=8 name=bull:ZW1haWxz:w:emails-7c9f-abcde age=12 db=14 cmd=bzpopmin
id=4 addr=10.1.2.3:40314 laddr=10.0.0.9:6379 fd=9 name= age=12 db=14 cmd=evalsha
id=5 addr=[fd00::42]:51000 laddr=[fd00::1]:6379 fd=10 name=bull:ZW1haWxz age=3 db=14 cmd=bzpopmin
id=6 addr=10.1.2.4:40000 laddr=10.0.0.9:6379 fd=11 name=bull:ZW1haWxz:qe age=3 db=14 cmd=xread
id=7 addr=10.1.2.5:40001 laddr=10.0.0.9:6379 fd=12 name=bull:ZW1haWxzMg==:w:other age=3 db=14 cmd=bzpopmin
id=8 addr=/run/redis.sock:0 laddr=/run/redis.sock fd=13 name=bull:ZW1haWxz:w:local age=3 db=14 cmd=bzpopmin
id=9 addr=10.1.2.6:40002 laddr=10.0.0.9:6379 fd=14 name=other:ZW1haWxz:w:x age=3 db=14 cmd=bzpopmin
";

    #[test]
    fn finds_named_and_unnamed_workers_of_the_queue_only() {
        let found = worker_connections(LIST, "bull:ZW1haWxz");
        assert_eq!(
            found,
            vec![
                WorkerConnection {
                    name: Some("emails-7c9f-abcde".into()),
                    ip: Some("10.1.2.3".into())
                },
                WorkerConnection {
                    name: None,
                    ip: Some("fd00::42".into())
                },
                WorkerConnection {
                    name: Some("local".into()),
                    ip: None
                },
            ]
        );
        // The other queue (`emails2`, padded base64) and the other prefix are found by their
        // own names.
        assert_eq!(
            worker_connections(LIST, "bull:ZW1haWxzMg==")[0].name.as_deref(),
            Some("other")
        );
        assert_eq!(worker_connections(LIST, "other:ZW1haWxz").len(), 1);
        assert!(worker_connections(LIST, "bull:bm9uZQ==").is_empty());
    }

    #[test]
    fn names_and_addresses() {
        assert_eq!(worker_name("bull:cQ==", "bull:cQ=="), Some(None));
        assert_eq!(worker_name("bull:cQ==:w:p-1", "bull:cQ=="), Some(Some("p-1")));
        // A name may hold colons: everything after `:w:` is the name.
        assert_eq!(worker_name("bull:cQ==:w:a:b", "bull:cQ=="), Some(Some("a:b")));
        assert_eq!(worker_name("bull:cQ==:w:", "bull:cQ=="), Some(None));
        assert_eq!(worker_name("bull:cQ==:qe", "bull:cQ=="), None);
        assert_eq!(worker_name("bull:cQ==x", "bull:cQ=="), None);
        assert_eq!(peer_host("10.0.0.7:52814").as_deref(), Some("10.0.0.7"));
        assert_eq!(peer_host("[::1]:52814").as_deref(), Some("::1"));
        assert_eq!(peer_host("/tmp/redis.sock:0"), None);
        assert_eq!(peer_host("garbage"), None);
        // An empty text (no clients) and stray lines are no workers.
        assert!(worker_connections("", "bull:cQ==").is_empty());
        assert!(worker_connections("\r\nnot a client line\n", "bull:cQ==").is_empty());
    }
}
