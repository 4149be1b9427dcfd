//! One pipelined beanstalkd connection, shared by every tube polled on its server.
//!
//! beanstalkd answers a connection's commands in the order they were sent, so requests
//! need not wait for each other: a writer sends them as they come (a burst in one write)
//! and a reader hands each reply to the oldest request still waiting, in FIFO order. Both
//! run in one task per connection, which also owns the socket; the socket closes when the
//! task ends.
//!
//! Any failure of the connection (I/O error, end of stream, a reply that breaks the
//! framing, a request that timed out) ends it for good: the failure is recorded as the
//! connection's cause, every request still waiting fails with it, and the pool opens a
//! new connection for the next request.
//!
//! Request timeouts are kept by the connection's task, not by each request: one watchdog
//! timer looks at the requests waiting for a reply, so thousands of polls a second cost no
//! timer each.

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::sync::lock;

/// Longest response line we accept (`OK <bytes>\r\n` or an error word).
const MAX_LINE: u64 = 256;
/// Largest `stats-tube` body we accept; real ones are under 1 KiB.
const MAX_BODY: usize = 64 * 1024;
/// Requests queued for the writer before senders wait (they are bounded by the request
/// timeout either way). The registry aligns the polls of every tube with the same interval
/// to one tick, so thousands arrive at once; the channel allocates as it fills.
const QUEUED_REQUESTS: usize = 16 * 1024;
/// The writer gathers queued requests into one write up to about this many bytes.
const WRITE_BATCH: usize = 64 * 1024;
/// Read buffer: a tick's replies (`NOT_FOUND` or a short YAML body each) in few reads.
const READ_BUFFER: usize = 64 * 1024;
/// How long the writer waits for more requests after the first of a batch. Thousands of
/// tubes polled every second arrive one by one; gathering them costs each poll at most
/// this much latency and saves most of the write and read system calls and task wake-ups
/// on both sides (beanstalkd answers a batch in one go, too).
const GATHER: Duration = Duration::from_millis(2);

/// Why a request or a connection failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// The server could not be reached (connect failed or timed out).
    #[error("{0}")]
    Unreachable(String),
    /// The connection broke (I/O error, closed by the server, or dropped after another
    /// request's bad reply). A fresh connection may well work.
    #[error("{0}")]
    Broken(String),
    /// The server did not answer in time; the connection was discarded.
    #[error("no answer within {0:?}")]
    TimedOut(Duration),
    /// This request's reply broke the protocol; the connection was discarded.
    #[error("{0}")]
    Protocol(String),
}

/// A well-formed reply to `stats-tube`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `OK <bytes>` and its body.
    Body(String),
    /// `NOT_FOUND`: no such tube.
    NotFound,
}

type ReplySender = oneshot::Sender<Result<Reply, Failure>>;

struct Request {
    tube: Arc<str>,
    /// What waits for the reply once the command is written.
    waiting: Waiting,
}

/// A request's reply sender and when it times out.
struct Waiting {
    reply: ReplySender,
    deadline: Instant,
    /// After how long it times out (for the failure).
    timeout: Duration,
}

/// The requests waiting for replies, shared by the writer, the reader and the watchdog.
/// They run in one task, so the lock is never contended.
#[derive(Default)]
struct InFlight {
    state: Mutex<Waitlist>,
    /// The alarm was brought forward.
    rearmed: Notify,
}

#[derive(Default)]
struct Waitlist {
    /// In the order their commands were written.
    waiting: VecDeque<Waiting>,
    /// No later than the earliest deadline of a waiting request; `None` when none waits.
    alarm: Option<Instant>,
}

impl InFlight {
    fn push(&self, waiting: Waiting) {
        let deadline = waiting.deadline;
        let mut state = lock(&self.state);
        state.waiting.push_back(waiting);
        if state.alarm.is_none_or(|alarm| deadline < alarm) {
            state.alarm = Some(deadline);
            self.rearmed.notify_one();
        }
    }

    fn pop(&self) -> Option<ReplySender> {
        lock(&self.state).waiting.pop_front().map(|w| w.reply)
    }

    fn alarm(&self) -> Option<Instant> {
        lock(&self.state).alarm
    }

    /// At the alarm: the timeout of a request past its deadline, if any; else the alarm
    /// moves to the earliest deadline still waiting.
    fn check(&self, now: Instant) -> Option<Duration> {
        let mut state = lock(&self.state);
        if let Some(late) = state.waiting.iter().find(|w| w.deadline <= now) {
            return Some(late.timeout);
        }
        state.alarm = state.waiting.iter().map(|w| w.deadline).min();
        None
    }
}

/// A handle on one open connection; the connection's task ends when the last handle is
/// dropped (or when it fails).
pub struct Connection {
    requests: mpsc::Sender<Request>,
    /// Set once, when the connection fails; requests that find their reply channel gone
    /// report it.
    cause: Arc<OnceLock<Failure>>,
    /// Tells the task to end the connection (it then fails the requests still queued).
    stop: Arc<Notify>,
    task: AbortHandle,
}

impl Connection {
    /// Connects to `addr` within `timeout` and starts the connection's task.
    pub async fn open(addr: &str, timeout: Duration) -> Result<Connection, Failure> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| Failure::Unreachable(format!("timed out connecting after {timeout:?}")))?
            .map_err(|e| Failure::Unreachable(format!("connect: {e}")))?;
        // Small request/response exchanges: do not wait for Nagle.
        stream
            .set_nodelay(true)
            .map_err(|e| Failure::Unreachable(format!("set_nodelay: {e}")))?;
        let (requests, queued) = mpsc::channel(QUEUED_REQUESTS);
        let cause = Arc::new(OnceLock::new());
        let stop = Arc::new(Notify::new());
        let task = tokio::spawn(drive(stream, queued, Arc::clone(&cause), Arc::clone(&stop)))
            .abort_handle();
        Ok(Connection {
            requests,
            cause,
            stop,
            task,
        })
    }

    /// Whether the connection can still take requests.
    pub fn is_open(&self) -> bool {
        self.cause.get().is_none() && !self.requests.is_closed()
    }

    /// Sends `stats-tube <tube>` and waits for its reply. Unanswered after `timeout`, it
    /// fails and so does the connection (the connection's watchdog keeps the time). Any
    /// failure but a well-formed reply discards the connection.
    pub async fn stats_tube(&self, tube: &Arc<str>, timeout: Duration) -> Result<Reply, Failure> {
        let (reply, answer) = oneshot::channel();
        let exchange = async {
            let request = Request {
                tube: Arc::clone(tube),
                waiting: Waiting {
                    reply,
                    deadline: Instant::now() + timeout,
                    timeout,
                },
            };
            self.requests
                .send(request)
                .await
                .map_err(|_| self.failure())?;
            // The sender is dropped unanswered only when the connection ended.
            answer.await.map_err(|_| self.failure())?
        };
        let result = exchange.await;
        if let Err(failure) = &result {
            // Idempotent; makes sure the pool sees the connection as gone before the
            // caller retries.
            self.discard(failure.clone());
        }
        result
    }

    /// Ends the connection, failing every waiting request with `cause` (unless it already
    /// failed for another reason).
    fn discard(&self, cause: Failure) {
        let _ = self.cause.set(as_cause(cause));
        self.stop.notify_one();
    }

    fn failure(&self) -> Failure {
        self.cause
            .get()
            .cloned()
            .unwrap_or_else(|| Failure::Broken("connection closed".into()))
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // Nobody can send requests any more; the writer may be stuck on a full socket.
        self.task.abort();
    }
}

/// The connection's task: writer, reader and watchdog side by side until one fails, the
/// connection is discarded or every handle is gone. Then every request still waiting or
/// queued fails with the connection's cause.
async fn drive(
    stream: TcpStream,
    mut queued: mpsc::Receiver<Request>,
    cause: Arc<OnceLock<Failure>>,
    stop: Arc<Notify>,
) {
    let (read, write) = stream.into_split();
    let in_flight = InFlight::default();
    let failure = tokio::select! {
        failure = write_loop(write, &mut queued, &in_flight) => failure,
        failure = read_loop(BufReader::with_capacity(READ_BUFFER, read), &in_flight, &cause) => Some(failure),
        failure = watchdog(&in_flight) => Some(failure),
        // `discard` set the cause.
        () = stop.notified() => None,
    };
    if let Some(failure) = failure {
        let _ = cause.set(failure);
    }
    // Drain the queue rather than drop it: a sender admitted before the close may put its
    // request in after a drop's drain, where nobody would ever answer it. `recv` returns
    // `None` only once such senders are done.
    queued.close();
    while queued.recv().await.is_some() {}
}

/// Ends the connection when a request has waited for its reply past its deadline (replies
/// come in order, so every later request would wait behind it). Sleeps until the alarm,
/// then looks at every waiting request: with one timeout for all, that is one wake-up per
/// timeout while replies keep coming, and none while nothing waits.
async fn watchdog(in_flight: &InFlight) -> Failure {
    loop {
        let Some(alarm) = in_flight.alarm() else {
            in_flight.rearmed.notified().await;
            continue;
        };
        tokio::select! {
            () = tokio::time::sleep_until(alarm) => {}
            // A request with an earlier deadline came: sleep until that one instead.
            () = in_flight.rearmed.notified() => continue,
        }
        if let Some(timeout) = in_flight.check(Instant::now()) {
            return Failure::TimedOut(timeout);
        }
    }
}

/// Writes queued requests, registering each reply sender before its command goes out
/// (so a reply never arrives before its sender is in line). Returns `None` once every
/// handle is gone.
async fn write_loop(
    mut write: OwnedWriteHalf,
    queued: &mut mpsc::Receiver<Request>,
    in_flight: &InFlight,
) -> Option<Failure> {
    let mut buf = Vec::new();
    loop {
        let first = queued.recv().await?;
        buf.clear();
        let mut next = Some(first);
        let mut gathered = false;
        loop {
            while let Some(Request { tube, waiting }) = next {
                buf.extend_from_slice(b"stats-tube ");
                buf.extend_from_slice(tube.as_bytes());
                buf.extend_from_slice(b"\r\n");
                in_flight.push(waiting);
                next = if buf.len() < WRITE_BATCH {
                    queued.try_recv().ok()
                } else {
                    None
                };
            }
            if gathered || buf.len() >= WRITE_BATCH {
                break;
            }
            tokio::time::sleep(GATHER).await;
            gathered = true;
            next = queued.try_recv().ok();
        }
        if let Err(e) = write.write_all(&buf).await {
            return Some(Failure::Broken(format!("write: {e}")));
        }
    }
}

/// Reads replies and hands each to the oldest waiting request. Returns why it stopped;
/// a failed reply is also given to the request it belonged to.
async fn read_loop(
    mut read: BufReader<OwnedReadHalf>,
    in_flight: &InFlight,
    cause: &OnceLock<Failure>,
) -> Failure {
    let mut line = Vec::with_capacity(MAX_LINE as usize);
    loop {
        let frame = read_frame(&mut read, &mut line).await;
        let Some(reply_to) = in_flight.pop() else {
            // Bytes (or the end of the stream) when nothing was asked.
            return match frame {
                Err(Failure::Broken(detail)) => Failure::Broken(detail),
                Err(failure) => Failure::Broken(format!("unsolicited data: {failure}")),
                Ok(_) => Failure::Broken("unsolicited reply".into()),
            };
        };
        match frame {
            // The requester may have given up (timeout, cancelled poll): nothing to do.
            Ok(reply) => {
                let _ = reply_to.send(Ok(reply));
            }
            Err(failure) => {
                // Recorded before answering, so a retry never picks this connection.
                let _ = cause.set(as_cause(failure.clone()));
                let _ = reply_to.send(Err(failure.clone()));
                return failure;
            }
        }
    }
}

/// What a request's failure means for the other requests on the connection.
fn as_cause(failure: Failure) -> Failure {
    match failure {
        // They did nothing wrong: for them the connection just broke.
        Failure::Protocol(detail) => {
            Failure::Broken(format!("connection dropped after a bad reply: {detail}"))
        }
        other => other,
    }
}

fn broken(e: io::Error) -> Failure {
    Failure::Broken(e.to_string())
}

/// Reads one `OK <bytes>` frame or `NOT_FOUND`, bounded by [`MAX_LINE`] and [`MAX_BODY`].
/// `line` is scratch space for the response line, reused from reply to reply (thousands
/// of replies a second at rest would otherwise each allocate and grow one).
pub(crate) async fn read_frame<R>(
    read: &mut BufReader<R>,
    line: &mut Vec<u8>,
) -> Result<Reply, Failure>
where
    R: tokio::io::AsyncRead + Unpin,
{
    line.clear();
    (&mut *read)
        .take(MAX_LINE)
        .read_until(b'\n', line)
        .await
        .map_err(broken)?;
    if line.is_empty() {
        return Err(Failure::Broken("connection closed by the server".into()));
    }
    let Some(line) = line.strip_suffix(b"\r\n") else {
        return Err(Failure::Protocol(if line.len() as u64 >= MAX_LINE {
            format!("response line longer than {MAX_LINE} bytes")
        } else {
            "truncated response line".to_string()
        }));
    };
    let line = std::str::from_utf8(line)
        .map_err(|_| Failure::Protocol("response line is not UTF-8".into()))?;
    let size = match line.split_once(' ') {
        Some(("OK", size)) => size
            .parse::<usize>()
            .map_err(|_| Failure::Protocol(format!("bad body size in {:?}", shorten(line))))?,
        None if line == "NOT_FOUND" => return Ok(Reply::NotFound),
        _ => {
            return Err(Failure::Protocol(format!(
                "unexpected response {:?}",
                shorten(line)
            )));
        }
    };
    if size > MAX_BODY {
        return Err(Failure::Protocol(format!(
            "body of {size} bytes exceeds the {MAX_BODY}-byte limit"
        )));
    }
    let mut body = vec![0u8; size + 2];
    read.read_exact(&mut body).await.map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            Failure::Protocol(format!("truncated body: expected {size} bytes"))
        } else {
            broken(e)
        }
    })?;
    if !body.ends_with(b"\r\n") {
        return Err(Failure::Protocol("body does not end with CRLF".into()));
    }
    body.truncate(size);
    String::from_utf8(body)
        .map(Reply::Body)
        .map_err(|_| Failure::Protocol("body is not UTF-8".into()))
}

/// Keeps error messages short when a server sends a long line of garbage.
pub(crate) fn shorten(s: &str) -> String {
    s.chars().take(64).collect()
}

#[cfg(test)]
mod tests;
