//! Which log lines reach the output. Two libraries log what the controller already reports
//! better, and would flood the log with it:
//! - lapin logs every channel or connection the broker closes at ERROR (a passive declare of
//!   a queue nobody has declared yet closes the channel: once a second per queue). Each of
//!   those is also the error of the call that caused it, which the controller maps, reports
//!   in the WPA status and logs once.
//! - kube-client logs the whole response body at WARN when it cannot decode one (a pods
//!   list a minute long, on every retry of a watch). The controller logs a failing watch
//!   itself, once per distinct reason, without the body.
//!
//! Both are quieted unless the filter names them (`--log-level=info,lapin=debug`) or
//! `RUST_LOG` is set, which is taken as it is.

use tracing_subscriber::EnvFilter;

/// Directives added to a `--log-level` that does not mention these targets.
const QUIETED: [(&str, &str); 2] = [("lapin", "off"), ("kube_client", "error")];

/// The filter for `level` (an `EnvFilter` string such as `info` or `info,wpa=debug`);
/// `RUST_LOG` wins when set. An unreadable `level` falls back to `fallback`.
pub fn filter(level: &str, fallback: &str) -> EnvFilter {
    if let Ok(filter) = EnvFilter::try_from_default_env() {
        return filter;
    }
    EnvFilter::try_new(with_quieted(level))
        .unwrap_or_else(|_| EnvFilter::new(with_quieted(fallback)))
}

/// `level` plus the quieting directives for the targets it does not name.
pub fn with_quieted(level: &str) -> String {
    let named = |target: &str| {
        level.split(',').any(|directive| {
            let name = directive
                .split(['=', '['])
                .next()
                .unwrap_or_default()
                .trim();
            name == target || name.starts_with(&format!("{target}::"))
        })
    };
    let mut out = level.trim().to_string();
    for (target, directive) in QUIETED {
        if !named(target) {
            if !out.is_empty() {
                out.push(',');
            }
            out.push_str(&format!("{target}={directive}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quiets_the_noisy_libraries_unless_named() {
        assert_eq!(with_quieted("info"), "info,lapin=off,kube_client=error");
        assert_eq!(
            with_quieted("info,wpa=debug"),
            "info,wpa=debug,lapin=off,kube_client=error"
        );
        // Named targets are the user's choice.
        assert_eq!(
            with_quieted("info,lapin=debug"),
            "info,lapin=debug,kube_client=error"
        );
        assert_eq!(
            with_quieted("debug,kube_client::client=trace"),
            "debug,kube_client::client=trace,lapin=off"
        );
        // "lapinx" is not lapin.
        assert_eq!(
            with_quieted("lapinx=info"),
            "lapinx=info,lapin=off,kube_client=error"
        );
        assert_eq!(with_quieted(""), "lapin=off,kube_client=error");
    }

    #[test]
    fn the_result_is_a_valid_filter() {
        for level in ["info", "warn,wpa=debug", "trace", "info,lapin=debug"] {
            assert!(EnvFilter::try_new(with_quieted(level)).is_ok(), "{level}");
        }
    }
}
