//! Small clients for arranging queue state in end-to-end tests: a blocking beanstalkd
//! client and an SQS client for the shared moto server.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;

/// The shared moto server (hack/services.sh).
pub const MOTO_PORT: u16 = 5001;
/// The shared beanstalkd (hack/services.sh).
pub const BEANSTALKD_PORT: u16 = 11300;

/// An SQS client for the moto server on `port` (static test keys, us-east-1).
pub fn sqs_client(port: u16) -> aws_sdk_sqs::Client {
    use aws_sdk_sqs::config::{BehaviorVersion, Credentials, Region};
    let config = aws_sdk_sqs::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "test"))
        .endpoint_url(format!("http://127.0.0.1:{port}"))
        .build();
    aws_sdk_sqs::Client::from_conf(config)
}

/// Creates the SQS queue `name` and returns its URL.
pub async fn create_sqs_queue(client: &aws_sdk_sqs::Client, name: &str) -> String {
    let out = client
        .create_queue()
        .queue_name(name)
        .send()
        .await
        .expect("create_queue");
    out.queue_url().expect("queue url").to_string()
}

/// A blocking beanstalkd connection (producer side).
pub struct BeanstalkClient {
    conn: BufReader<TcpStream>,
}

impl BeanstalkClient {
    pub fn connect(port: u16) -> Self {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect beanstalkd");
        Self {
            conn: BufReader::new(stream),
        }
    }

    fn command(&mut self, command: &str) -> String {
        self.conn
            .get_mut()
            .write_all(format!("{command}\r\n").as_bytes())
            .expect("write to beanstalkd");
        let mut line = String::new();
        self.conn
            .read_line(&mut line)
            .expect("read from beanstalkd");
        line.trim_end().to_string()
    }

    /// Whether beanstalkd knows `tube` (asking does not create it).
    pub fn tube_exists(&mut self, tube: &str) -> bool {
        let answer = self.command(&format!("stats-tube {tube}"));
        if answer == "NOT_FOUND" {
            return false;
        }
        let size: usize = answer
            .strip_prefix("OK ")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("stats-tube answered {answer:?}"));
        let mut body = vec![0u8; size + 2];
        self.conn.read_exact(&mut body).expect("stats body");
        true
    }

    /// The server's `stats` (`current-connections`, `cmd-stats-tube`, ...).
    pub fn stats(&mut self) -> std::collections::HashMap<String, String> {
        let answer = self.command("stats");
        let size: usize = answer
            .strip_prefix("OK ")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("stats answered {answer:?}"));
        let mut body = vec![0u8; size + 2];
        self.conn.read_exact(&mut body).expect("stats body");
        String::from_utf8_lossy(&body)
            .lines()
            .filter_map(|l| l.split_once(": "))
            .map(|(k, v)| (k.to_string(), v.trim().to_string()))
            .collect()
    }

    /// Puts one ready job into `tube`.
    pub fn put(&mut self, tube: &str, body: &str) {
        assert_eq!(
            self.command(&format!("use {tube}")),
            format!("USING {tube}")
        );
        let answer = self.command(&format!("put 100 0 60 {}\r\n{body}", body.len()));
        assert!(answer.starts_with("INSERTED "), "put answered {answer:?}");
    }

    /// Deletes every ready job of `tube`, so that the tube goes away once unused.
    pub fn drain(&mut self, tube: &str) {
        assert_eq!(
            self.command(&format!("use {tube}")),
            format!("USING {tube}")
        );
        loop {
            let answer = self.command("peek-ready");
            let Some(rest) = answer.strip_prefix("FOUND ") else {
                assert_eq!(answer, "NOT_FOUND", "peek-ready answered {answer:?}");
                break;
            };
            let mut parts = rest.split(' ');
            let id = parts.next().expect("job id").to_string();
            let size: usize = parts.next().and_then(|n| n.parse().ok()).expect("job size");
            let mut body = vec![0u8; size + 2];
            self.conn.read_exact(&mut body).expect("job body");
            assert_eq!(self.command(&format!("delete {id}")), "DELETED");
        }
        // Stop using the tube, or this connection keeps it alive.
        assert_eq!(self.command("use default"), "USING default");
    }
}
