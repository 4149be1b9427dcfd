//! The RabbitMQ `queueURI` grammar:
//! `amqp[s]://[user:pass@]host[:port]/<vhost>/<queue>[?management=http[s]://host:port[/path]]`;
//! ports 5672/5671 by default; the vhost is percent-encoded, and an empty segment or `%2F`
//! means `/`.

use crate::queue::uri::parts::{
    encode, host_of, parse_url, port_of, query_params, quote, reject_fragment, render_host,
    render_userinfo, segments, userinfo,
};
use crate::queue::uri::redact::redact_url;
use crate::queue::uri::redacted as shown;

/// Parses an `amqp://` or `amqps://` queue URI.
pub(crate) fn parse(input: &str, scheme: &str) -> Result<AmqpUri, String> {
    from_url(&parse_url(input)?, scheme == "amqps")
}

/// `amqp[s]://[user:pass@]host[:port]/<vhost, percent-encoded>/<queue>[?management=http[s]://host:port]`
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct AmqpUri {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// Decoded vhost ("/" for the default vhost, written `%2F` in the URI).
    pub vhost: String,
    pub queue: String,
    pub username: Option<String>,
    pub password: Option<String>,
    /// Base URL of the management HTTP API, when given.
    pub management: Option<String>,
}

impl std::fmt::Debug for AmqpUri {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpUri")
            .field("tls", &self.tls)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("vhost", &self.vhost)
            .field("queue", &self.queue)
            .field("username", &self.username)
            .field("password", &shown(&self.password))
            .field("management", &self.management)
            .finish()
    }
}

const DEFAULT_AMQP_PORT: u16 = 5672;

const DEFAULT_AMQPS_PORT: u16 = 5671;

fn from_url(url: &url::Url, tls: bool) -> Result<AmqpUri, String> {
    reject_fragment(url)?;
    let host = host_of(url)?;
    let port = port_of(
        url,
        if tls {
            DEFAULT_AMQPS_PORT
        } else {
            DEFAULT_AMQP_PORT
        },
    )?;
    let (username, password) = userinfo(url)?;
    let query = query_params(url, &["management"])?;
    let [vhost, queue] = segments::<2>(
        url,
        "/<vhost>/<queue> (`%2F` or an empty segment is the default vhost `/`)",
    )?;
    if queue.is_empty() {
        return Err("the queue segment is empty; expected /<vhost>/<queue>".to_string());
    }
    if queue.len() > 255 {
        return Err("the queue name is longer than AMQP's 255 bytes".to_string());
    }
    let vhost = if vhost.is_empty() {
        "/".to_string()
    } else {
        vhost
    };
    let management = match query.get("management") {
        Some(m) => Some(parse_management(m)?),
        None => None,
    };
    Ok(AmqpUri {
        tls,
        host,
        port,
        vhost,
        queue,
        username,
        password,
        management,
    })
}

fn parse_management(value: &str) -> Result<String, String> {
    let url = url::Url::parse(value)
        .map_err(|e| format!("`management` is not a URL ({e}); expected http[s]://host:port"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "`management` must be an http or https URL, not `{}`",
            quote(url.scheme())
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("`management` has no host".to_string());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(
            "`management` must not carry credentials; put them in the amqp \
                    userinfo or the Secret"
                .to_string(),
        );
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("`management` must not have a query or fragment".to_string());
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

impl AmqpUri {
    /// Canonical form with the password (here and in the management URL) as `***`.
    pub(crate) fn redacted(&self) -> String {
        let vhost = if self.vhost == "/" {
            "%2F".to_string()
        } else {
            encode(&self.vhost)
        };
        let mut s = format!(
            "{}://{}{}:{}/{}/{}",
            if self.tls { "amqps" } else { "amqp" },
            render_userinfo(&self.username, &self.password),
            render_host(&self.host),
            self.port,
            vhost,
            encode(&self.queue)
        );
        if let Some(m) = &self.management {
            s.push_str("?management=");
            s.push_str(&encode(&redact_url(m)));
        }
        s
    }
}
