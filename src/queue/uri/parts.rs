//! Pieces every `queueURI` grammar shares: host, port, userinfo, path segments and query
//! parameters with clear errors, percent-encoding, and bounded quoting of user input.

/// Parses `input` as a URL.
pub(crate) fn parse_url(input: &str) -> Result<url::Url, String> {
    url::Url::parse(input).map_err(|e| format!("not a valid URL: {e}"))
}

/// Characters kept as-is when rendering a path segment or query value.
const ENCODE_SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Error messages quote at most this much of the (redacted) input.
const MAX_QUOTED_LEN: usize = 300;

pub(crate) fn reject_fragment(url: &url::Url) -> Result<(), String> {
    match url.fragment() {
        Some(_) => Err("a `#fragment` has no meaning here".to_string()),
        None => Ok(()),
    }
}

/// The host without IPv6 brackets (the form connectors take).
pub(crate) fn host_of(url: &url::Url) -> Result<String, String> {
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
pub(crate) fn url_host(url: &url::Url) -> String {
    url.host_str().unwrap_or_default().to_string()
}

pub(crate) fn port_of(url: &url::Url, default: u16) -> Result<u16, String> {
    match url.port() {
        Some(0) => Err("bad port 0".to_string()),
        Some(port) => Ok(port),
        None => Ok(default),
    }
}

pub(crate) fn userinfo(url: &url::Url) -> Result<(Option<String>, Option<String>), String> {
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
pub(crate) fn segments<const N: usize>(
    url: &url::Url,
    expected: &str,
) -> Result<[String; N], String> {
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

pub(crate) fn query_params(
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

pub(crate) fn decode(s: &str, what: &str) -> Result<String, String> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| format!("the {what} is not valid UTF-8 once percent-decoded"))
}

pub(crate) fn encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, ENCODE_SET).to_string()
}

pub(crate) fn render_host(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

pub(crate) fn render_userinfo(username: &Option<String>, password: &Option<String>) -> String {
    match (username, password) {
        (None, None) => String::new(),
        (Some(u), None) => format!("{}@", encode(u)),
        (u, Some(_)) => format!("{}:***@", u.as_deref().map(encode).unwrap_or_default()),
    }
}

/// Bounds quoted user input in messages (char-boundary safe).
pub(crate) fn quote(s: &str) -> String {
    if s.len() <= MAX_QUOTED_LEN {
        return s.to_string();
    }
    let mut end = MAX_QUOTED_LEN;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}
