//! `rediss://` against a real TLS-only redis-server with a test CA.
//!
//! Alone in its file because it points `SSL_CERT_FILE` (read by rustls-native-certs) at
//! the test CA, which must happen before any thread starts.

use crate::support;

use std::time::Duration;

use redis::Commands;
use support::brokers::{RedisServer, make_certificates, unique};
use wpa::queue::{Credentials, ProviderOptions, QueueError, QueueUri};

#[test]
#[allow(unsafe_code)]
fn rediss_verifies_the_server_and_reads_the_queue() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = make_certificates(dir.path());
    // SAFETY: no other thread exists yet in this test process (nextest runs each test
    // in its own process; this file has one test and builds its runtime afterwards).
    unsafe { std::env::set_var("SSL_CERT_FILE", &ca) };
    let server = RedisServer::start_tls(&cert, &key, &ca);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let queue = unique("tls");
        let opts = ProviderOptions {
            request_timeout: Duration::from_secs(3),
            ..ProviderOptions::default()
        };
        // The provider first: it must install a crypto provider by itself (no panic).
        let uri =
            QueueUri::parse(&format!("rediss://localhost:{}/0/{queue}", server.port)).unwrap();
        let mut p = uri.connect(&Credentials::default(), &opts).await.unwrap();
        assert_eq!(p.poll().await.unwrap().visible, 0);

        // Arrange data over TLS too, through the redis crate directly.
        let client = redis::Client::open(format!("rediss://localhost:{}/0", server.port)).unwrap();
        let mut con = client.get_connection().unwrap();
        let _: () = con.rpush(&queue, &["a", "b"]).unwrap();
        let m = p.poll().await.unwrap();
        assert_eq!((m.visible, m.in_flight), (2, Some(0)));

        // Plain TCP against the TLS port does not get an answer that counts as metrics.
        let plain =
            QueueUri::parse(&format!("redis://127.0.0.1:{}/0/{queue}", server.port)).unwrap();
        let result = match plain.connect(&Credentials::default(), &opts).await {
            Ok(mut p) => p.poll().await.map(|_| ()),
            Err(e) => Err(e),
        };
        assert!(
            matches!(
                result,
                Err(QueueError::Unavailable { .. } | QueueError::BadResponse { .. })
            ),
            "{result:?}"
        );
    });
}
