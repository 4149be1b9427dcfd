//! The table's rows are consistent, and what is derived from them is right. No test here
//! lists the providers: a new row is checked like the others.

use std::collections::HashSet;

use super::*;

fn unique(values: &[&str]) -> bool {
    values.iter().collect::<HashSet<_>>().len() == values.len()
}

#[test]
fn names_schemes_and_flags_are_unique_and_well_formed() {
    let mut names = Vec::new();
    let mut schemes = Vec::new();
    let mut flags = Vec::new();
    for kind in ProviderKind::all() {
        let spec = kind.spec();
        assert_eq!(
            serde_json::to_value(kind).unwrap(),
            serde_json::json!(spec.name),
            "inspect output and metrics use the row's name"
        );
        assert_eq!(kind.to_string(), spec.name);
        names.push(spec.name);
        names.extend(spec.aliases);
        schemes.extend(spec.schemes);
        flags.push(spec.interval_flag);
        assert!(
            spec.name.chars().all(|c| c.is_ascii_lowercase()),
            "{}: names are lower-case letters",
            spec.name
        );
        for scheme in spec.schemes {
            assert!(
                !scheme.is_empty() && scheme.chars().all(|c| c.is_ascii_lowercase() || c == '+'),
                "{scheme}: schemes are lower-case letters and +"
            );
        }
        let flag = spec.interval_flag.trim_start_matches("--");
        assert!(
            spec.interval_flag.starts_with("--")
                && flag.ends_with("-poll-interval")
                && flag
                    .split('-')
                    .all(|w| !w.is_empty() && w.chars().all(|c| c.is_ascii_lowercase())),
            "{}: a --lower-case-poll-interval flag",
            spec.interval_flag
        );
        assert!(!spec.default_interval.is_zero());
        assert_eq!(ProviderKind::from_name(spec.name), Some(kind));
        for alias in spec.aliases {
            assert_eq!(ProviderKind::from_name(alias), Some(kind));
        }
    }
    assert!(unique(&names), "{names:?}");
    assert!(unique(&schemes), "{schemes:?}");
    assert!(unique(&flags), "{flags:?}");
    assert_eq!(ProviderKind::all().count(), ProviderKind::ALL.len());
}

#[test]
fn every_example_parses_to_its_own_row_and_round_trips() {
    for kind in ProviderKind::all() {
        let spec = kind.spec();
        let parsed = QueueUri::parse(spec.example)
            .unwrap_or_else(|e| panic!("{}'s example: {e}", spec.name));
        assert_eq!(parsed.kind(), kind, "{}", spec.example);
        let again = QueueUri::parse(&parsed.redacted()).expect("the redacted form parses");
        assert_eq!(again, parsed, "{}", spec.example);
        for scheme in spec.schemes {
            assert_eq!(by_scheme(scheme), Some(kind));
        }
    }
    assert_eq!(by_scheme("nope"), None);
    assert_eq!(ProviderKind::from_name("kafka"), None);
}

#[test]
fn the_environment_variable_follows_the_flag() {
    for kind in ProviderKind::all() {
        let spec = kind.spec();
        let env = spec.interval_env();
        assert!(
            env.starts_with("WPA_") && env.ends_with("_POLL_INTERVAL"),
            "{env}"
        );
        assert!(
            env.chars().all(|c| c.is_ascii_uppercase() || c == '_'),
            "{env}"
        );
    }
}

#[test]
fn the_crd_rule_and_message_name_every_scheme() {
    let rule = uri_scheme_rule("self");
    let message = uri_scheme_message("queueURI");
    assert!(
        rule.starts_with("self.matches('^(") && rule.ends_with(")://')"),
        "{rule}"
    );
    for scheme in all_schemes() {
        assert!(
            rule.contains(&scheme.replace('+', "\\\\+")),
            "{scheme} in {rule}"
        );
        assert!(
            message.contains(&format!("{scheme}://")),
            "{scheme} in {message}"
        );
    }
    assert!(
        message.starts_with("queueURI must start with "),
        "{message}"
    );
    assert_eq!(
        default_services().split(',').count(),
        ProviderKind::ALL.len()
    );
}
