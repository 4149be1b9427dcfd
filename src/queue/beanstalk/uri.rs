//! The beanstalkd `queueURI` grammar: `beanstalk://host[:port]/<tube>`; port 11300 by
//! default; no credentials (beanstalkd has no authentication).

use crate::queue::uri::parts::{
    encode, host_of, parse_url, port_of, query_params, quote, reject_fragment, render_host,
    segments,
};

/// Parses a `beanstalk://` queue URI.
pub(crate) fn parse(input: &str, _scheme: &str) -> Result<BeanstalkUri, String> {
    from_url(&parse_url(input)?)
}

/// `beanstalk://host:port/<tube>`
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BeanstalkUri {
    pub host: String,
    pub port: u16,
    pub tube: String,
}

const DEFAULT_BEANSTALK_PORT: u16 = 11300;

fn from_url(url: &url::Url) -> Result<BeanstalkUri, String> {
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
    Ok(BeanstalkUri { host, port, tube })
}

impl BeanstalkUri {
    /// Canonical form (beanstalk URIs hold no secrets).
    pub(crate) fn redacted(&self) -> String {
        format!(
            "beanstalk://{}:{}/{}",
            render_host(&self.host),
            self.port,
            encode(&self.tube)
        )
    }
}
