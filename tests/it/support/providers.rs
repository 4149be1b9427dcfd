//! Connecting a queue provider the way the provider tests do: a test URI, a short request
//! timeout.

use std::time::Duration;

use wpa::queue::{Credentials, ProviderOptions, QueueError, QueueProvider, QueueUri};

/// The default options with a 3 s request timeout.
pub fn options() -> ProviderOptions {
    ProviderOptions {
        request_timeout: Duration::from_secs(3),
        ..ProviderOptions::default()
    }
}

/// Connects to `uri` with `creds` (the URI must parse).
pub async fn try_provider(
    uri: &str,
    creds: &Credentials,
) -> Result<Box<dyn QueueProvider>, QueueError> {
    let uri = QueueUri::parse(uri).expect("test URI parses");
    uri.connect(creds, &options()).await
}

/// Connects to `uri` without credentials; panics when that fails.
pub async fn provider(uri: &str) -> Box<dyn QueueProvider> {
    try_provider(uri, &Credentials::default())
        .await
        .expect("connect to the queue")
}
