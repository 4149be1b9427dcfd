//! Any body an HTTP metrics endpoint may answer: a clear error or metrics that match the JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wpa::queue::http::parse_metrics;

fuzz_target!(|body: &[u8]| {
    match parse_metrics(body, jiff::Timestamp::UNIX_EPOCH) {
        Ok(metrics) => {
            let value: serde_json::Value =
                serde_json::from_slice(body).expect("accepted bodies are JSON");
            assert_eq!(value["visible"].as_u64(), Some(metrics.visible));
            assert_eq!(value["in_flight"].as_u64(), metrics.in_flight);
            assert_eq!(value["idle"].as_bool(), metrics.idle);
        }
        Err(message) => assert!(!message.is_empty()),
    }
});
