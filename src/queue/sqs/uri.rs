//! The SQS `queueURI` grammar: `https://sqs.<region>.amazonaws.com/<account>/<queue>`
//! (also `sqs.<region>.amazonaws.com.cn` and the legacy `<region>.queue.amazonaws.com`; the
//! region comes from the host name), or `http(s)://host[:port]/<account>/<queue>[?region=..]`
//! for SQS-compatible servers (moto, ElasticMQ, LocalStack), where without `region` the AWS
//! environment decides. SQS URIs take no credentials.

use crate::queue::uri::parts::{
    encode, host_of, parse_url, query_params, quote, reject_fragment, segments, url_host,
};

/// Parses an `http://` or `https://` queue URI.
pub(crate) fn parse(input: &str, _scheme: &str) -> Result<SqsUri, String> {
    from_url(&parse_url(input)?)
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

fn from_url(url: &url::Url) -> Result<SqsUri, String> {
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
    Ok(SqsUri {
        queue_url,
        endpoint: if aws_region.is_some() {
            None
        } else {
            Some(origin)
        },
        region,
        account,
        queue,
    })
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

impl SqsUri {
    /// The queue URL (plus the region of a non-AWS endpoint): SQS URIs hold no secrets.
    pub(crate) fn redacted(&self) -> String {
        let mut s = self.queue_url.clone();
        if self.endpoint.is_some()
            && let Some(region) = &self.region
        {
            s.push_str("?region=");
            s.push_str(&encode(region));
        }
        s
    }
}
