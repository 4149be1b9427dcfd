//! The `queueURI` grammar: one scheme per provider, parsed with the `url` crate.
//!
//! Every parsed form keeps credentials found in userinfo apart from the address, so that
//! [`QueueUri::redacted`] can print the queue without them. Unknown query parameters are
//! rejected (a typo must not silently fall back to a default), except for HTTP URIs whose
//! query belongs to the endpoint.
//!
//! # Grammar
//!
//! | Provider | Form |
//! |---|---|
//! | SQS (AWS) | `https://sqs.<region>.amazonaws.com/<account>/<queue>` (also `sqs.<region>.amazonaws.com.cn` and the legacy `<region>.queue.amazonaws.com`); the region comes from the host name |
//! | SQS-compatible (moto, ElasticMQ, LocalStack) | `http(s)://host[:port]/<account>/<queue>[?region=<region>]`; without `region` the AWS environment decides |
//! | RabbitMQ | `amqp[s]://[user:pass@]host[:port]/<vhost>/<queue>[?management=http[s]://host:port[/path]]`; ports 5672/5671 by default; the vhost is percent-encoded, and an empty segment or `%2F` means `/` |
//! | Redis / Celery | `redis[s]://[user:pass@]host[:port]/<db>/<queue>[?priority_steps=0,3,6,9&sep=<sep>&prefix=<prefix>]`; port 6379 by default; kombu's defaults are steps `0,3,6,9`, separator `\x06\x16` (write it `%06%16`) and no prefix |
//! | beanstalkd | `beanstalk://host[:port]/<tube>`; port 11300 by default |
//! | HTTP (JSON) | `http+json://...` or `https+json://...`: the same URL with `http`/`https` answers the metrics as JSON |
//!
//! Path segments (queue, vhost, tube) and query values are percent-decoded; write
//! `%2F` for a `/` inside a name and `%2B` for a `+` in a query value. Credentials may be
//! given in the userinfo (`user:pass@`), but a Secret referenced by the WPA takes
//! precedence. SQS and beanstalkd URIs take no credentials.

use super::ProviderKind;

/// A parsed `queueURI`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum QueueUri {
    Sqs(SqsUri),
    Rabbitmq(AmqpUri),
    Redis(RedisUri),
    Beanstalk(BeanstalkUri),
    Http(HttpUri),
}

/// `https://sqs.<region>.amazonaws.com/<account>/<queue>`, or any other
/// `http(s)://host[:port]/<account>/<queue>` for SQS-compatible servers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SqsUri {
    /// The queue URL as SQS expects it (no query string, no userinfo).
    pub queue_url: String,
    /// `Some(scheme://host[:port])` for a non-AWS endpoint; `None` for amazonaws.com.
    pub endpoint: Option<String>,
    /// From the amazonaws.com host name or `?region=`; `None` means the AWS environment.
    pub region: Option<String>,
    pub account: String,
    pub queue: String,
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

/// `redis[s]://[user:pass@]host[:port]/<db>/<queue>[?priority_steps=0,3,6,9&sep=..&prefix=..]`
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RedisUri {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    pub db: i64,
    pub queue: String,
    pub username: Option<String>,
    pub password: Option<String>,
    /// kombu priority steps; default `[0, 3, 6, 9]`.
    pub priority_steps: Vec<u32>,
    /// kombu priority separator; default `"\x06\x16"`.
    pub separator: String,
    /// kombu `global_keyprefix`; default empty.
    pub prefix: String,
}

/// `beanstalk://host:port/<tube>`
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BeanstalkUri {
    pub host: String,
    pub port: u16,
    pub tube: String,
}

/// `http+json://...` or `https+json://...`: the URL (with `http`/`https`) that returns
/// the queue's metrics as JSON.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct HttpUri {
    pub url: String,
}

/// A `queueURI` that cannot be used; the message names the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid queueURI {uri}: {problem}")]
pub struct UriError {
    /// The URI with credentials redacted.
    pub uri: String,
    pub problem: String,
}

/// Shows whether a secret is set without showing it.
pub(crate) fn redacted(secret: &Option<String>) -> &'static str {
    if secret.is_some() {
        "<redacted>"
    } else {
        "<none>"
    }
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
            .field("password", &redacted(&self.password))
            .field("management", &self.management)
            .finish()
    }
}

impl std::fmt::Debug for RedisUri {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisUri")
            .field("tls", &self.tls)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("db", &self.db)
            .field("queue", &self.queue)
            .field("username", &self.username)
            .field("password", &redacted(&self.password))
            .field("priority_steps", &self.priority_steps)
            .field("separator", &self.separator)
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl std::fmt::Debug for HttpUri {
    // The URL may carry a token in its query or userinfo: show scheme, host and path only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = match url::Url::parse(&self.url) {
            Ok(u) => format!(
                "{}://{}{}",
                u.scheme(),
                u.host_str().unwrap_or(""),
                u.path()
            ),
            Err(_) => "<unparseable>".to_string(),
        };
        f.debug_struct("HttpUri").field("url", &shown).finish()
    }
}

/// kombu's default `priority_steps` for the Redis transport.
pub const DEFAULT_PRIORITY_STEPS: [u32; 4] = [0, 3, 6, 9];
/// kombu's default priority separator for the Redis transport.
pub const DEFAULT_SEPARATOR: &str = "\x06\x16";

const SUPPORTED_SCHEMES: &str = "http, https (SQS), amqp, amqps (RabbitMQ), redis, rediss (Redis/Celery), beanstalk, http+json, https+json";
/// Longer inputs are refused before parsing; no real queue URI comes close.
const MAX_URI_LEN: usize = 4096;
/// Error messages quote at most this much of the (redacted) input.
const MAX_QUOTED_LEN: usize = 300;
const MAX_PRIORITY_STEPS: usize = 256;
const DEFAULT_AMQP_PORT: u16 = 5672;
const DEFAULT_AMQPS_PORT: u16 = 5671;
const DEFAULT_REDIS_PORT: u16 = 6379;
const DEFAULT_BEANSTALK_PORT: u16 = 11300;

/// Characters kept as-is when rendering a path segment or query value.
const ENCODE_SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

impl QueueUri {
    /// Parses a `queueURI` (see the module documentation for the grammar).
    pub fn parse(input: &str) -> Result<QueueUri, UriError> {
        let fail = |problem: String| UriError {
            uri: quote(&redact_input(input)),
            problem,
        };
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err(fail("the URI is empty".to_string()));
        }
        if trimmed.len() > MAX_URI_LEN {
            return Err(fail(format!(
                "the URI is {} bytes long; at most {MAX_URI_LEN} are accepted",
                trimmed.len()
            )));
        }
        // The URL parser silently drops tabs and newlines; a URI containing them was
        // mangled somewhere (YAML folding, a pasted secret) and must not be guessed at.
        if trimmed.chars().any(char::is_control) {
            return Err(fail(
                "the URI contains control characters (tab, newline...)".to_string(),
            ));
        }
        let Some((scheme, _)) = trimmed.split_once("://") else {
            return Err(fail(format!(
                "no scheme (`scheme://`); supported schemes: {SUPPORTED_SCHEMES}"
            )));
        };
        let scheme = scheme.to_ascii_lowercase();
        let parsed = match scheme.as_str() {
            "http+json" | "https+json" => parse_http(trimmed, &scheme),
            "http" | "https" | "amqp" | "amqps" | "redis" | "rediss" | "beanstalk" => {
                match url::Url::parse(trimmed) {
                    Ok(url) => match scheme.as_str() {
                        "http" | "https" => parse_sqs(&url),
                        "amqp" | "amqps" => parse_amqp(&url, scheme == "amqps"),
                        "redis" | "rediss" => parse_redis(&url, scheme == "rediss"),
                        _ => parse_beanstalk(&url),
                    },
                    Err(e) => Err(format!("not a valid URL: {e}")),
                }
            }
            other => Err(format!(
                "unknown scheme `{}`; supported schemes: {SUPPORTED_SCHEMES}",
                quote(other)
            )),
        };
        parsed.map_err(fail)
    }

    /// The provider family this URI selects.
    pub fn kind(&self) -> ProviderKind {
        match self {
            QueueUri::Sqs(_) => ProviderKind::Sqs,
            QueueUri::Rabbitmq(_) => ProviderKind::Rabbitmq,
            QueueUri::Redis(_) => ProviderKind::Redis,
            QueueUri::Beanstalk(_) => ProviderKind::Beanstalkd,
            QueueUri::Http(_) => ProviderKind::Http,
        }
    }

    /// The URI in canonical form with every secret replaced by `***`: safe for logs,
    /// events, errors and metric labels.
    pub fn redacted(&self) -> String {
        match self {
            QueueUri::Sqs(u) => {
                let mut s = u.queue_url.clone();
                if u.endpoint.is_some()
                    && let Some(region) = &u.region
                {
                    s.push_str("?region=");
                    s.push_str(&encode(region));
                }
                s
            }
            QueueUri::Rabbitmq(u) => {
                let vhost = if u.vhost == "/" {
                    "%2F".to_string()
                } else {
                    encode(&u.vhost)
                };
                let mut s = format!(
                    "{}://{}{}:{}/{}/{}",
                    if u.tls { "amqps" } else { "amqp" },
                    render_userinfo(&u.username, &u.password),
                    render_host(&u.host),
                    u.port,
                    vhost,
                    encode(&u.queue)
                );
                if let Some(m) = &u.management {
                    s.push_str("?management=");
                    s.push_str(&encode(&redact_url(m)));
                }
                s
            }
            QueueUri::Redis(u) => {
                let mut s = format!(
                    "{}://{}{}:{}/{}/{}",
                    if u.tls { "rediss" } else { "redis" },
                    render_userinfo(&u.username, &u.password),
                    render_host(&u.host),
                    u.port,
                    u.db,
                    encode(&u.queue)
                );
                let mut query = Vec::new();
                if u.priority_steps != DEFAULT_PRIORITY_STEPS {
                    let steps: Vec<String> =
                        u.priority_steps.iter().map(|s| s.to_string()).collect();
                    query.push(format!("priority_steps={}", steps.join(",")));
                }
                if u.separator != DEFAULT_SEPARATOR {
                    query.push(format!("sep={}", encode(&u.separator)));
                }
                if !u.prefix.is_empty() {
                    query.push(format!("prefix={}", encode(&u.prefix)));
                }
                if !query.is_empty() {
                    s.push('?');
                    s.push_str(&query.join("&"));
                }
                s
            }
            QueueUri::Beanstalk(u) => format!(
                "beanstalk://{}:{}/{}",
                render_host(&u.host),
                u.port,
                encode(&u.tube)
            ),
            QueueUri::Http(u) => {
                let redacted = redact_url(&u.url);
                match redacted.split_once("://") {
                    Some((scheme, rest)) => format!("{scheme}+json://{rest}"),
                    None => redacted,
                }
            }
        }
    }
}

impl std::fmt::Display for QueueUri {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl std::str::FromStr for QueueUri {
    type Err = UriError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        QueueUri::parse(s)
    }
}

fn parse_sqs(url: &url::Url) -> Result<QueueUri, String> {
    if !url.username().is_empty() || url.password().is_some() {
        return Err(
            "SQS URIs take no credentials; the AWS SDK reads them from the \
                    environment (IRSA, instance profile, AWS_* variables)"
                .to_string(),
        );
    }
    reject_fragment(url)?;
    let host = host_of(url)?;
    let query = query_params(url, &["region"])?;
    let [account, queue] = segments::<2>(url, "/<account>/<queue>")?;
    if account.is_empty() {
        return Err("the account segment is empty; expected /<account>/<queue>".to_string());
    }
    check_sqs_queue_name(&queue)?;
    let aws_region = aws_region_from_host(&host.to_ascii_lowercase());
    let query_region = query.get("region").cloned();
    if let Some(r) = &query_region
        && !is_region_name(r)
    {
        return Err(format!("bad region `{}`", quote(r)));
    }
    let region = match (&aws_region, query_region) {
        (Some(from_host), Some(from_query)) if *from_host != from_query => {
            return Err(format!(
                "region `{from_query}` in the query contradicts region `{from_host}` of the host"
            ));
        }
        (Some(from_host), _) => Some(from_host.clone()),
        (None, from_query) => from_query,
    };
    let origin = match url.port() {
        Some(port) => format!("{}://{}:{}", url.scheme(), url_host(url), port),
        None => format!("{}://{}", url.scheme(), url_host(url)),
    };
    let queue_url = format!("{origin}/{}/{}", encode(&account), encode(&queue));
    Ok(QueueUri::Sqs(SqsUri {
        queue_url,
        endpoint: if aws_region.is_some() {
            None
        } else {
            Some(origin)
        },
        region,
        account,
        queue,
    }))
}

/// The region named by an AWS SQS host name, if the host is one.
fn aws_region_from_host(host: &str) -> Option<String> {
    if let Some(rest) = host.strip_prefix("sqs.") {
        for suffix in [".amazonaws.com", ".amazonaws.com.cn"] {
            if let Some(region) = rest.strip_suffix(suffix)
                && is_region_name(region)
            {
                return Some(region.to_string());
            }
        }
    }
    if let Some(region) = host.strip_suffix(".queue.amazonaws.com")
        && is_region_name(region)
    {
        return Some(region.to_string());
    }
    // The oldest legacy endpoint served us-east-1 only.
    if host == "queue.amazonaws.com" {
        return Some("us-east-1".to_string());
    }
    None
}

fn is_region_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn check_sqs_queue_name(queue: &str) -> Result<(), String> {
    let base = queue.strip_suffix(".fifo").unwrap_or(queue);
    let valid = !base.is_empty()
        && queue.len() <= 80
        && base
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "bad SQS queue name `{}`: 1 to 80 letters, digits, `-` or `_`, optionally ending in `.fifo`",
            quote(queue)
        ))
    }
}

fn parse_amqp(url: &url::Url, tls: bool) -> Result<QueueUri, String> {
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
    Ok(QueueUri::Rabbitmq(AmqpUri {
        tls,
        host,
        port,
        vhost,
        queue,
        username,
        password,
        management,
    }))
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

fn parse_redis(url: &url::Url, tls: bool) -> Result<QueueUri, String> {
    reject_fragment(url)?;
    let host = host_of(url)?;
    let port = port_of(url, DEFAULT_REDIS_PORT)?;
    let (username, password) = userinfo(url)?;
    let query = query_params(url, &["priority_steps", "sep", "prefix"])?;
    let [db, queue] = segments::<2>(url, "/<db>/<queue>")?;
    let db = db
        .parse::<u32>()
        .ok()
        .filter(|d| i64::from(*d) <= i64::from(i32::MAX))
        .map(i64::from)
        .ok_or_else(|| format!("bad db `{}`: expected a database number >= 0", quote(&db)))?;
    if queue.is_empty() {
        return Err("the queue segment is empty; expected /<db>/<queue>".to_string());
    }
    let priority_steps = match query.get("priority_steps") {
        Some(steps) => parse_priority_steps(steps)?,
        None => DEFAULT_PRIORITY_STEPS.to_vec(),
    };
    let separator = match query.get("sep") {
        Some(sep) if sep.is_empty() => return Err("`sep` must not be empty".to_string()),
        Some(sep) => sep.clone(),
        None => DEFAULT_SEPARATOR.to_string(),
    };
    let prefix = query.get("prefix").cloned().unwrap_or_default();
    Ok(QueueUri::Redis(RedisUri {
        tls,
        host,
        port,
        db,
        queue,
        username,
        password,
        priority_steps,
        separator,
        prefix,
    }))
}

fn parse_priority_steps(value: &str) -> Result<Vec<u32>, String> {
    let mut steps = Vec::new();
    for part in value.split(',') {
        let part = part.trim();
        let step = part.parse::<u32>().map_err(|_| {
            format!(
                "bad priority step `{}`: expected comma-separated numbers >= 0 like 0,3,6,9",
                quote(part)
            )
        })?;
        if let Some(last) = steps.last()
            && step <= *last
        {
            return Err(format!(
                "bad priority step {step}: steps must be strictly increasing"
            ));
        }
        steps.push(step);
        if steps.len() > MAX_PRIORITY_STEPS {
            return Err(format!("more than {MAX_PRIORITY_STEPS} priority steps"));
        }
    }
    Ok(steps)
}

fn parse_beanstalk(url: &url::Url) -> Result<QueueUri, String> {
    if !url.username().is_empty() || url.password().is_some() {
        return Err("beanstalkd has no authentication; remove the userinfo".to_string());
    }
    reject_fragment(url)?;
    let host = host_of(url)?;
    let port = port_of(url, DEFAULT_BEANSTALK_PORT)?;
    query_params(url, &[])?;
    let [tube] = segments::<1>(url, "/<tube>")?;
    // beanstalkd's name rules: 1..=200 bytes of letters, digits and -+/;.$_(),
    // not starting with a hyphen.
    let valid = !tube.is_empty()
        && tube.len() <= 200
        && !tube.starts_with('-')
        && tube
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-+/;.$_()".contains(&b));
    if !valid {
        return Err(format!(
            "bad tube name `{}`: 1 to 200 letters, digits or -+/;.$_() not starting with `-`",
            quote(&tube)
        ));
    }
    Ok(QueueUri::Beanstalk(BeanstalkUri { host, port, tube }))
}

fn parse_http(input: &str, scheme: &str) -> Result<QueueUri, String> {
    let target = if scheme == "https+json" {
        "https"
    } else {
        "http"
    };
    let rest = &input[scheme.len()..];
    let url =
        url::Url::parse(&format!("{target}{rest}")).map_err(|e| format!("not a valid URL: {e}"))?;
    if url.host_str().is_none_or(str::is_empty) {
        return Err("missing host".to_string());
    }
    // Never sent to the server; refusing it keeps a pasted `#token=...` out of printouts.
    reject_fragment(&url)?;
    Ok(QueueUri::Http(HttpUri {
        url: url.to_string(),
    }))
}

fn reject_fragment(url: &url::Url) -> Result<(), String> {
    match url.fragment() {
        Some(_) => Err("a `#fragment` has no meaning here".to_string()),
        None => Ok(()),
    }
}

/// The host without IPv6 brackets (the form connectors take).
fn host_of(url: &url::Url) -> Result<String, String> {
    match url.host() {
        Some(url::Host::Domain(d)) if !d.is_empty() => {
            // Non-special schemes (redis, amqp, beanstalk) keep the host opaque and
            // percent-encoded; what it decodes to must still be a host name.
            let host = decode(d, "host")?;
            if host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
            {
                Ok(host)
            } else {
                Err(format!(
                    "host `{}` is not a host name (letters, digits, `-`, `.`, `_`)",
                    quote(&host.escape_default().to_string())
                ))
            }
        }
        Some(url::Host::Ipv4(ip)) => Ok(ip.to_string()),
        Some(url::Host::Ipv6(ip)) => Ok(ip.to_string()),
        _ => Err("missing host".to_string()),
    }
}

/// The host as it appears in a URL (IPv6 in brackets).
fn url_host(url: &url::Url) -> String {
    url.host_str().unwrap_or_default().to_string()
}

fn port_of(url: &url::Url, default: u16) -> Result<u16, String> {
    match url.port() {
        Some(0) => Err("bad port 0".to_string()),
        Some(port) => Ok(port),
        None => Ok(default),
    }
}

fn userinfo(url: &url::Url) -> Result<(Option<String>, Option<String>), String> {
    let username = match url.username() {
        "" => None,
        u => Some(decode(u, "user name")?),
    };
    let password = match url.password() {
        Some(p) => Some(decode(p, "password")?),
        None => None,
    };
    Ok((username, password))
}

/// Exactly `N` decoded path segments, or an error quoting the expected shape.
fn segments<const N: usize>(url: &url::Url, expected: &str) -> Result<[String; N], String> {
    let path = url.path();
    let path = path.strip_prefix('/').unwrap_or(path);
    let raw: Vec<&str> = if path.is_empty() {
        Vec::new()
    } else {
        path.split('/').collect()
    };
    if raw.len() < N {
        return Err(format!(
            "missing path segment{}: expected {expected}",
            if N - raw.len() > 1 { "s" } else { "" }
        ));
    }
    if raw.len() > N {
        return Err(format!(
            "{} extra path segment(s): expected {expected} (write `/` inside a name as %2F)",
            raw.len() - N
        ));
    }
    let decoded = raw
        .iter()
        .map(|s| decode(s, "path segment"))
        .collect::<Result<Vec<_>, _>>()?;
    decoded
        .try_into()
        .map_err(|_| format!("expected {expected}"))
}

fn query_params(
    url: &url::Url,
    allowed: &[&str],
) -> Result<std::collections::HashMap<String, String>, String> {
    let mut params = std::collections::HashMap::new();
    for (key, value) in url.query_pairs() {
        if !allowed.contains(&key.as_ref()) {
            let known = if allowed.is_empty() {
                "none are accepted".to_string()
            } else {
                format!("accepted: {}", allowed.join(", "))
            };
            return Err(format!(
                "unknown query parameter `{}` ({known})",
                quote(&key)
            ));
        }
        if params.insert(key.to_string(), value.into_owned()).is_some() {
            return Err(format!("query parameter `{key}` is given twice"));
        }
    }
    Ok(params)
}

fn decode(s: &str, what: &str) -> Result<String, String> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| format!("the {what} is not valid UTF-8 once percent-decoded"))
}

fn encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, ENCODE_SET).to_string()
}

fn render_host(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

fn render_userinfo(username: &Option<String>, password: &Option<String>) -> String {
    match (username, password) {
        (None, None) => String::new(),
        (Some(u), None) => format!("{}@", encode(u)),
        (u, Some(_)) => format!("{}:***@", u.as_deref().map(encode).unwrap_or_default()),
    }
}

/// Query keys whose values are secrets.
fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    key.contains("password")
        || key.contains("token")
        || key.contains("secret")
        || matches!(
            key.as_str(),
            "key" | "apikey" | "api_key" | "pass" | "passwd" | "sig" | "signature" | "auth"
        )
}

/// `input` with the userinfo password and secret query values replaced by `***`.
/// Works on strings that are not valid URLs too, so errors can quote them.
pub fn redact_input(input: &str) -> String {
    let (head, query) = match input.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (input, None),
    };
    let mut out = String::with_capacity(input.len());
    match head.split_once("://") {
        Some((scheme, rest)) => {
            out.push_str(scheme);
            out.push_str("://");
            // Split at the last `@` rather than at the first `/`: an unencoded `/` in a
            // password must not leak it (over-redacting a path with `@` is harmless).
            let authority_end = match rest.rfind('@') {
                Some(at) => rest[at..].find(['/', '#']).map_or(rest.len(), |i| at + i),
                None => rest.find(['/', '#']).unwrap_or(rest.len()),
            };
            let (authority, path) = rest.split_at(authority_end);
            match authority.rsplit_once('@') {
                Some((userinfo, hostport)) => {
                    match userinfo.split_once(':') {
                        Some((user, _)) => {
                            out.push_str(user);
                            out.push_str(":***");
                        }
                        None => out.push_str(userinfo),
                    }
                    out.push('@');
                    out.push_str(hostport);
                }
                None => out.push_str(authority),
            }
            out.push_str(path);
        }
        None => out.push_str(head),
    }
    if let Some(query) = query {
        out.push('?');
        out.push_str(&redact_query(query));
    }
    out
}

/// A query string with the values of secret keys replaced by `***`.
fn redact_query(query: &str) -> String {
    // `;`, `#` and a stray `?` split pairs too (a fragment is redacted like the query):
    // over-redacting is harmless, while `a=b?password=x` or `#?password=x` must not show `x`.
    let separators = ['&', ';', '?', '#'];
    query
        .split_inclusive(separators)
        .map(|piece| {
            let (pair, separator) = match piece.char_indices().last() {
                Some((i, c)) if separators.contains(&c) => piece.split_at(i),
                _ => (piece, ""),
            };
            format!("{}{separator}", redact_pair(pair))
        })
        .collect()
}

/// One `key=value` of a query with a secret value replaced by `***`.
fn redact_pair(pair: &str) -> String {
    match pair.split_once('=') {
        Some((k, _)) if is_secret_key(&decode(k, "key").unwrap_or_default()) => {
            format!("{k}=***")
        }
        // A nested URL (RabbitMQ `management`) may carry its own userinfo.
        Some((k, v)) if v.contains("%40") || v.contains('@') => {
            let nested = decode(v, "value").unwrap_or_default();
            format!("{k}={}", encode(&redact_input(&nested)))
        }
        _ => pair.to_string(),
    }
}

/// A URL that parsed, redacted part by part rather than as text (its path may hold `@`, `?`
/// or `#`, which text-level redaction must treat as possible userinfo or query).
fn redact_url(text: &str) -> String {
    match url::Url::parse(text) {
        Ok(mut url) => {
            let query = url.query().map(|q| (q.to_string(), redact_query(q)));
            let secret_query = query.as_ref().is_some_and(|(q, redacted)| q != redacted);
            if url.password().is_none() && !secret_query {
                // Nothing to hide: keep the text as written.
                return text.to_string();
            }
            if url.password().is_some() {
                // Fails only for URLs without a host, which have no password either.
                let _ = url.set_password(Some("***"));
            }
            if let Some((_, redacted)) = query {
                url.set_query(Some(&redacted));
            }
            url.to_string()
        }
        Err(_) => redact_input(text),
    }
}

/// Bounds quoted user input in messages (char-boundary safe).
fn quote(s: &str) -> String {
    if s.len() <= MAX_QUOTED_LEN {
        return s.to_string();
    }
    let mut end = MAX_QUOTED_LEN;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> QueueUri {
        match QueueUri::parse(s) {
            Ok(u) => u,
            Err(e) => panic!("{s} should parse: {e}"),
        }
    }

    fn problem(s: &str) -> String {
        match QueueUri::parse(s) {
            Ok(u) => panic!("{s} should not parse, got {u:?}"),
            Err(e) => e.problem,
        }
    }

    #[test]
    fn sqs_aws_host_gives_region_and_no_endpoint() {
        let QueueUri::Sqs(u) = ok("https://sqs.eu-west-1.amazonaws.com/123456789012/jobs") else {
            panic!("not sqs")
        };
        assert_eq!(u.region.as_deref(), Some("eu-west-1"));
        assert_eq!(u.endpoint, None);
        assert_eq!(u.account, "123456789012");
        assert_eq!(u.queue, "jobs");
        assert_eq!(
            u.queue_url,
            "https://sqs.eu-west-1.amazonaws.com/123456789012/jobs"
        );
    }

    #[test]
    fn sqs_china_and_legacy_hosts() {
        let QueueUri::Sqs(cn) = ok("https://sqs.cn-north-1.amazonaws.com.cn/1/q.fifo") else {
            panic!("not sqs")
        };
        assert_eq!(cn.region.as_deref(), Some("cn-north-1"));
        assert_eq!(cn.queue, "q.fifo");
        assert_eq!(cn.endpoint, None);
        let QueueUri::Sqs(legacy) = ok("https://us-west-2.queue.amazonaws.com/1/q") else {
            panic!("not sqs")
        };
        assert_eq!(legacy.region.as_deref(), Some("us-west-2"));
        let QueueUri::Sqs(oldest) = ok("https://queue.amazonaws.com/1/q") else {
            panic!("not sqs")
        };
        assert_eq!(oldest.region.as_deref(), Some("us-east-1"));
    }

    #[test]
    fn sqs_compatible_endpoint() {
        let QueueUri::Sqs(u) = ok("http://127.0.0.1:4566/000000000000/work?region=us-east-1")
        else {
            panic!("not sqs")
        };
        assert_eq!(u.endpoint.as_deref(), Some("http://127.0.0.1:4566"));
        assert_eq!(u.region.as_deref(), Some("us-east-1"));
        assert_eq!(u.queue_url, "http://127.0.0.1:4566/000000000000/work");
        let QueueUri::Sqs(no_region) = ok("http://elasticmq:9324/queue/work") else {
            panic!("not sqs")
        };
        assert_eq!(no_region.region, None);
        assert_eq!(no_region.endpoint.as_deref(), Some("http://elasticmq:9324"));
    }

    #[test]
    fn sqs_errors() {
        assert!(problem("https://sqs.us-east-1.amazonaws.com/123").contains("missing path"));
        assert!(problem("https://sqs.us-east-1.amazonaws.com/1/q/x").contains("extra path"));
        assert!(problem("https://sqs.us-east-1.amazonaws.com//q").contains("account"));
        assert!(problem("https://sqs.us-east-1.amazonaws.com/1/bad%20name").contains("queue name"));
        assert!(problem("https://a:b@sqs.us-east-1.amazonaws.com/1/q").contains("no credentials"));
        assert!(
            problem("https://sqs.us-east-1.amazonaws.com/1/q?region=eu-west-1")
                .contains("contradicts")
        );
        assert!(problem("http://h/1/q?regoin=x").contains("unknown query parameter `regoin`"));
        assert!(problem("http://h/1/q?region=EU WEST").contains("bad region"));
        assert!(problem("http://h:70000/1/q").contains("invalid port"));
    }

    #[test]
    fn amqp_defaults_and_vhosts() {
        let QueueUri::Rabbitmq(u) = ok("amqp://guest:gu%40st@rabbit/%2F/celery") else {
            panic!("not amqp")
        };
        assert!(!u.tls);
        assert_eq!(u.port, 5672);
        assert_eq!(u.vhost, "/");
        assert_eq!(u.queue, "celery");
        assert_eq!(u.username.as_deref(), Some("guest"));
        assert_eq!(u.password.as_deref(), Some("gu@st"));
        assert_eq!(u.management, None);

        let QueueUri::Rabbitmq(empty) = ok("amqps://rabbit//q") else {
            panic!("not amqp")
        };
        assert!(empty.tls);
        assert_eq!(empty.port, 5671);
        assert_eq!(empty.vhost, "/");

        let QueueUri::Rabbitmq(named) =
            ok("amqp://rabbit:5673/prod%2Feu/my%20queue?management=https://rabbit:15671/admin/")
        else {
            panic!("not amqp")
        };
        assert_eq!(named.port, 5673);
        assert_eq!(named.vhost, "prod/eu");
        assert_eq!(named.queue, "my queue");
        assert_eq!(
            named.management.as_deref(),
            Some("https://rabbit:15671/admin")
        );
    }

    #[test]
    fn amqp_errors() {
        assert!(problem("amqp://rabbit/q").contains("missing path segment"));
        assert!(problem("amqp://rabbit/%2F/").contains("queue segment is empty"));
        assert!(problem("amqp://rabbit/%2F/a/b").contains("extra path"));
        assert!(problem("amqp:///%2F/q").contains("host"));
        assert!(problem("amqp://rabbit:0/%2F/q").contains("bad port"));
        assert!(problem("amqp://rabbit:99999/%2F/q").contains("invalid port"));
        assert!(problem("amqp://rabbit/%2F/q?management=ftp://x").contains("http or https"));
        assert!(problem("amqp://rabbit/%2F/q?management=nope").contains("not a URL"));
        assert!(problem("amqp://r/%2F/q?management=http://u:p@m:15672").contains("credentials"));
        assert!(problem("amqp://r/%2F/q?heartbeat=10").contains("unknown query parameter"));
        let long = format!("amqp://r/%2F/{}", "q".repeat(256));
        assert!(problem(&long).contains("255"));
    }

    #[test]
    fn redis_defaults() {
        let QueueUri::Redis(u) = ok("redis://cache/3/celery") else {
            panic!("not redis")
        };
        assert!(!u.tls);
        assert_eq!(u.port, 6379);
        assert_eq!(u.db, 3);
        assert_eq!(u.queue, "celery");
        assert_eq!(u.priority_steps, vec![0, 3, 6, 9]);
        assert_eq!(u.separator, "\x06\x16");
        assert_eq!(u.prefix, "");
        assert_eq!(u.username, None);
        assert_eq!(u.password, None);
    }

    #[test]
    fn redis_options_and_credentials() {
        let QueueUri::Redis(u) = ok(
            "rediss://:s3cret@[::1]:6380/0/a%2Fb?priority_steps=0,1,2,3,4,5,6,7,8,9&sep=%3A&prefix=app%3A",
        ) else {
            panic!("not redis")
        };
        assert!(u.tls);
        assert_eq!(u.host, "::1");
        assert_eq!(u.port, 6380);
        assert_eq!(u.queue, "a/b");
        assert_eq!(u.priority_steps, (0..10).collect::<Vec<u32>>());
        assert_eq!(u.separator, ":");
        assert_eq!(u.prefix, "app:");
        assert_eq!(u.username, None);
        assert_eq!(u.password.as_deref(), Some("s3cret"));
        let QueueUri::Redis(acl) = ok("redis://worker:pw@h/1/q?priority_steps=0") else {
            panic!("not redis")
        };
        assert_eq!(acl.username.as_deref(), Some("worker"));
        assert_eq!(acl.priority_steps, vec![0]);
    }

    #[test]
    fn redis_errors() {
        assert!(problem("redis://h/x/q").contains("bad db `x`"));
        assert!(problem("redis://h/-1/q").contains("bad db"));
        assert!(problem("redis://h/99999999999/q").contains("bad db"));
        assert!(problem("redis://h/0").contains("missing path segment"));
        assert!(problem("redis://h").contains("missing path segments"));
        assert!(problem("redis://h/0/").contains("queue segment is empty"));
        assert!(problem("redis://h/0/q/extra").contains("extra path"));
        assert!(problem("redis://h/0/q?priority_steps=0,a").contains("bad priority step `a`"));
        assert!(problem("redis://h/0/q?priority_steps=0,-3").contains("bad priority step"));
        assert!(problem("redis://h/0/q?priority_steps=").contains("bad priority step"));
        assert!(problem("redis://h/0/q?priority_steps=3,1").contains("strictly increasing"));
        assert!(problem("redis://h/0/q?priority_steps=0,0").contains("strictly increasing"));
        let many: Vec<String> = (0..300).map(|i| i.to_string()).collect();
        assert!(
            problem(&format!("redis://h/0/q?priority_steps={}", many.join(",")))
                .contains("more than")
        );
        assert!(problem("redis://h/0/q?sep=").contains("`sep` must not be empty"));
        assert!(problem("redis://h/0/q?priority_step=0").contains("unknown query parameter"));
        assert!(problem("redis://h/0/q?sep=a&sep=b").contains("twice"));
        assert!(problem("redis://h/0/q#frag").contains("fragment"));
        assert!(problem("redis://h/0/%FF").contains("UTF-8"));
    }

    #[test]
    fn beanstalk() {
        let QueueUri::Beanstalk(u) = ok("beanstalk://queue.local/emails") else {
            panic!("not beanstalk")
        };
        assert_eq!(u.port, 11300);
        assert_eq!(u.tube, "emails");
        let QueueUri::Beanstalk(u) = ok("beanstalk://10.0.0.1:11301/a%2Fb(1)") else {
            panic!("not beanstalk")
        };
        assert_eq!(u.port, 11301);
        assert_eq!(u.tube, "a/b(1)");
        assert!(problem("beanstalk://h").contains("missing path segment"));
        assert!(problem("beanstalk://h/-bad").contains("bad tube name"));
        assert!(problem("beanstalk://h/sp%20ace").contains("bad tube name"));
        assert!(problem("beanstalk://u:p@h/t").contains("no authentication"));
        assert!(problem("beanstalk://h/a/b").contains("extra path"));
        assert!(problem("beanstalk://h/t?x=1").contains("none are accepted"));
    }

    #[test]
    fn http_json() {
        let QueueUri::Http(u) = ok("https+json://metrics.local:8443/queues/q?token=abc") else {
            panic!("not http")
        };
        assert_eq!(u.url, "https://metrics.local:8443/queues/q?token=abc");
        let QueueUri::Http(u) = ok("HTTP+JSON://h/m") else {
            panic!("not http")
        };
        assert_eq!(u.url, "http://h/m");
        assert!(problem("http+json://:80/m").contains("host"));
    }

    #[test]
    fn unknown_or_missing_scheme_lists_supported() {
        let p = problem("kafka://broker/topic");
        assert!(p.contains("unknown scheme `kafka`"), "{p}");
        assert!(p.contains("amqp") && p.contains("redis") && p.contains("beanstalk"));
        assert!(problem("just-a-queue-name").contains("no scheme"));
        assert!(problem("").contains("empty"));
        assert!(problem("   ").contains("empty"));
        assert!(problem("redis://h/0/q\tx").contains("control characters"));
        assert!(problem("redis://h/0/\nq").contains("control characters"));
        assert!(problem("redis://h/0/q\u{0}").contains("control characters"));
        let long = format!("redis://h/0/{}", "q".repeat(5000));
        assert!(problem(&long).contains("at most"));
    }

    #[test]
    fn kinds() {
        assert_eq!(ok("http://h/1/q").kind(), ProviderKind::Sqs);
        assert_eq!(ok("amqp://h/%2F/q").kind(), ProviderKind::Rabbitmq);
        assert_eq!(ok("redis://h/0/q").kind(), ProviderKind::Redis);
        assert_eq!(ok("beanstalk://h/t").kind(), ProviderKind::Beanstalkd);
        assert_eq!(ok("http+json://h/m").kind(), ProviderKind::Http);
    }

    #[test]
    fn redacted_hides_secrets_and_round_trips() {
        let cases = [
            (
                "amqp://guest:topsecret@rabbit/%2F/q?management=http://rabbit:15672",
                "amqp://guest:***@rabbit:5672/%2F/q?management=http%3A%2F%2Frabbit%3A15672",
            ),
            (
                "redis://:topsecret@h/2/q?sep=%3A",
                "redis://:***@h:6379/2/q?sep=%3A",
            ),
            ("redis://h/2/q", "redis://h:6379/2/q"),
            (
                "https+json://u:topsecret@h/m?token=topsecret&queue=a",
                "https+json://u:***@h/m?token=***&queue=a",
            ),
            ("beanstalk://h/t", "beanstalk://h:11300/t"),
            (
                "http://localhost:4566/000000000000/q?region=us-east-1",
                "http://localhost:4566/000000000000/q?region=us-east-1",
            ),
        ];
        for (input, expected) in cases {
            let uri = ok(input);
            assert_eq!(uri.redacted(), expected, "{input}");
            assert_eq!(uri.to_string(), expected);
            assert!(!format!("{uri:?}").contains("topsecret"), "{input}");
            // Except for the redacted secrets, the canonical form parses back to the same queue.
            if !input.contains("topsecret") {
                assert_eq!(ok(expected), uri, "{input}");
            }
        }
    }

    #[test]
    fn errors_never_show_secrets() {
        for bad in [
            "redis://user:topsecret@h/x/q",
            "redis://user:top/secret@h:bad/0/q",
            "amqp://user:topsecret@rabbit:99999/%2F/q",
            "https+json://h/m?password=topsecret&x=%ZZ",
            "kafka://user:topsecret@h/t",
            "amqp://r/%2F/q?management=http://u:topsecret@m",
            "amqp://r/%2F/q?management=http%3A%2F%2Fu%3Atopsecret%40m",
        ] {
            let err = match QueueUri::parse(bad) {
                Ok(_) if bad.starts_with("https+json") => continue,
                Ok(u) => panic!("{bad} parsed as {u:?}"),
                Err(e) => e,
            };
            let shown = format!("{err} {err:?}");
            assert!(!shown.contains("topsecret"), "{shown}");
            assert!(!shown.contains("secret@"), "{shown}");
        }
    }

    // Found by the fuzz targets in fuzz/ (see fuzz/README.md).
    #[test]
    fn fuzz_findings_stay_fixed() {
        // A percent-encoded control character in an opaque host decoded to a host that
        // printed unencoded and could not be parsed back.
        let err = QueueUri::parse("redis://tsep=%06ubes:6379/0/celery").unwrap_err();
        assert!(err.to_string().contains("is not a host name"), "{err}");
        // Secrets behind a stray `?` or in a fragment were quoted in errors.
        for bad in [
            "https:////pa?sword=*?password=vvtvvvia&",
            "amqp://&?#vdv/?password=vvtvvvia&",
        ] {
            let shown = QueueUri::parse(bad).unwrap_err().to_string();
            assert!(!shown.contains("vvtvvvia"), "{shown}");
        }
        // `@` in an HTTP path was taken for userinfo when redacting, and the redacted form
        // no longer parsed.
        let uri = ok("https+json://user@r:6358/ret@%ed=4:?s79:6379/0/eu?token=abc");
        let shown = uri.redacted();
        assert_eq!(ok(&shown).kind(), ProviderKind::Http, "{shown}");
        assert!(!shown.contains("abc"), "{shown}");
        let uri = ok("https+json://u:hunter22@h/p@x?q=1");
        assert_eq!(uri.redacted(), "https+json://u:***@h/p@x?q=1");
        // Same for a RabbitMQ management URL with `@` in its path: it has no credentials
        // and must not look as if it had once redacted.
        let uri = ok("amqp://u:pw@rabbit:567/%2F/celery?management=http:/t:5672/%/rabbit:w@672");
        let (QueueUri::Rabbitmq(before), QueueUri::Rabbitmq(after)) = (&uri, &ok(&uri.redacted()))
        else {
            panic!("not RabbitMQ: {uri:?}");
        };
        assert_eq!(after.management, before.management);
        // HTTP fragments are never sent; a pasted `#password=...` is refused, not printed.
        let shown = QueueUri::parse("http+json://s/#?password=nxvnsvvm&/ww")
            .unwrap_err()
            .to_string();
        assert!(
            shown.contains("fragment") && !shown.contains("nxvnsvvm"),
            "{shown}"
        );
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(input in "\\PC{0,200}") {
            let _ = QueueUri::parse(&input);
        }

        #[test]
        fn parse_never_panics_on_scheme_like_input(
            scheme in "(redis|rediss|amqp|amqps|http|https|beanstalk|http\\+json)",
            rest in "[a-z0-9:@/%?&=,.\\[\\]#+-]{0,80}",
        ) {
            let input = format!("{scheme}://{rest}");
            if let Ok(uri) = QueueUri::parse(&input) {
                // What parses renders to something that parses to the same kind.
                let again = QueueUri::parse(&uri.redacted());
                if let Ok(again) = again {
                    proptest::prop_assert_eq!(again.kind(), uri.kind());
                }
            }
        }

        #[test]
        fn password_never_in_error(pw in "[a-zA-Z0-9]{12,20}", tail in "[a-z0-9/?=&%:]{0,30}") {
            for scheme in ["redis", "amqp", "kafka", "beanstalk"] {
                let input = format!("{scheme}://user:{pw}@host{tail}");
                if let Err(e) = QueueUri::parse(&input) {
                    proptest::prop_assert!(!e.to_string().contains(&pw), "{}", e);
                }
            }
        }
    }
}
