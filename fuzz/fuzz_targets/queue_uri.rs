//! Any string given as `queueURI`: parsing never panics, errors stay short, and a parsed URI
//! prints (redacted) as a URI that parses again to the same provider.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wpa::queue::QueueUri;

fuzz_target!(|input: &str| {
    match QueueUri::parse(input) {
        Ok(uri) => {
            let shown = uri.redacted();
            let again = QueueUri::parse(&shown)
                .unwrap_or_else(|e| panic!("redacted form {shown:?} of {input:?} does not parse: {e}"));
            assert_eq!(again.kind(), uri.kind(), "{input:?} -> {shown:?}");
        }
        Err(e) => {
            // Errors quote a bounded excerpt of the input, however long the input is.
            let message = e.to_string();
            assert!(message.len() < 2048, "error of {} bytes", message.len());
        }
    }
});
