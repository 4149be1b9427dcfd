//! Property tests of the parsers that read user input, run on every `cargo nextest` (the
//! libFuzzer targets in fuzz/ search deeper but need a nightly build; see fuzz/README.md).
//! Generated inputs are well-formed documents with random values, so these reach the value
//! checks the byte-level fuzzers rarely get to.

use proptest::prelude::*;
use proptest::test_runner::Config;
use wpa::queue::http::parse_metrics;
use wpa::simulate::trace::{TraceError, read_trace};

fn config() -> Config {
    Config {
        cases: 2000,
        failure_persistence: None,
        ..Config::default()
    }
}

/// A cell as a user could write it: numbers of every kind, blanks, words.
fn cell() -> impl Strategy<Value = String> {
    prop_oneof![
        (0u64..1_000_000).prop_map(|n| n.to_string()),
        (-1000i64..0).prop_map(|n| n.to_string()),
        (0.0f64..1e6).prop_map(|f| format!("{f}")),
        Just(String::new()),
        Just("NaN".to_string()),
        Just("inf".to_string()),
        Just("18446744073709551616".to_string()),
        "[a-z ]{1,6}",
    ]
}

fn header() -> impl Strategy<Value = Vec<&'static str>> {
    let columns = ["t", "messages", "in_flight", "sent_per_minute", "idle"];
    proptest::sample::subsequence(columns.to_vec(), 1..=5).prop_shuffle()
}

proptest! {
    #![proptest_config(config())]

    /// Every trace is rows that agree with the text, or an error naming where it went wrong.
    #[test]
    fn trace_rows_match_the_text_or_the_error_says_where(
        columns in header(),
        cells in proptest::collection::vec(proptest::collection::vec(cell(), 0..7), 0..8),
    ) {
        let mut text = columns.join(",");
        text.push('\n');
        for row in &cells {
            text.push_str(&row.join(","));
            text.push('\n');
        }
        // The CSV reader skips blank lines.
        let cells: Vec<&Vec<String>> = cells.iter().filter(|row| !row.join(",").is_empty()).collect();
        match read_trace(text.as_bytes()) {
            Ok(rows) => {
                prop_assert_eq!(rows.len(), cells.len());
                let at = |name: &str| columns.iter().position(|c| *c == name);
                let mut previous = f64::NEG_INFINITY;
                for (row, source) in rows.iter().zip(cells.iter().copied()) {
                    prop_assert!(row.t.is_finite() && row.t >= previous, "{:?}", row);
                    previous = row.t;
                    let messages = &source[at("messages").expect("required column")];
                    prop_assert_eq!(row.messages.to_string(), messages.trim());
                    prop_assert!(row.sent_per_minute.is_finite() && row.sent_per_minute >= 0.0);
                    if let Some(i) = at("in_flight") {
                        let expected = source[i].trim().parse::<u64>().unwrap_or(0);
                        prop_assert_eq!(row.in_flight, expected);
                    }
                }
            }
            Err(TraceError::BadValue { line, .. } | TraceError::FieldCount { line, .. }) => {
                // Lines count from the header (line 1), blank lines included.
                prop_assert!(line >= 2 && line as usize <= text.lines().count(), "line {}", line);
            }
            Err(TraceError::MissingColumn { column }) => {
                prop_assert!(!columns.contains(&column));
            }
            Err(TraceError::Empty) => prop_assert!(cells.is_empty()),
            Err(other) => prop_assert!(false, "unexpected error {other} for {text:?}"),
        }
    }

    /// Any JSON value in any field: metrics equal to the JSON or an error naming the field.
    #[test]
    fn http_metrics_equal_the_json_or_the_error_names_the_field(
        visible in json_value(),
        in_flight in json_value(),
        idle in json_value(),
    ) {
        let mut body = serde_json::Map::new();
        for (name, value) in [("visible", &visible), ("in_flight", &in_flight), ("idle", &idle)] {
            if let Some(value) = value {
                body.insert(name.to_string(), value.clone());
            }
        }
        let text = serde_json::Value::Object(body).to_string();
        match parse_metrics(text.as_bytes(), jiff::Timestamp::UNIX_EPOCH) {
            Ok(metrics) => {
                prop_assert_eq!(Some(metrics.visible), visible.as_ref().and_then(|v| v.as_u64()));
                prop_assert_eq!(metrics.in_flight, in_flight.as_ref().and_then(|v| v.as_u64()));
                prop_assert_eq!(metrics.idle, idle.as_ref().and_then(|v| v.as_bool()));
            }
            Err(message) => {
                let named = ["visible", "in_flight", "idle"]
                    .iter()
                    .any(|field| message.contains(&format!("`{field}`")));
                prop_assert!(named, "{message} for {text}");
            }
        }
    }
}

/// A field's JSON: absent (None), null, or a value of any type and sign.
fn json_value() -> impl Strategy<Value = Option<serde_json::Value>> {
    use serde_json::{Value, json};
    proptest::option::of(prop_oneof![
        Just(Value::Null),
        any::<u64>().prop_map(|n| json!(n)),
        any::<i64>().prop_map(|n| json!(n)),
        (-1e20f64..1e20).prop_map(|f| json!(f)),
        any::<bool>().prop_map(|b| json!(b)),
        "[0-9a-z]{0,5}".prop_map(|s| json!(s)),
        Just(json!([1, 2])),
        Just(json!({"n": 1})),
    ])
}
