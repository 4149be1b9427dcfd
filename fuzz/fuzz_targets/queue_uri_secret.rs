//! A password in a queueURI's userinfo or in a secret query parameter never appears in the
//! parsed URI's printed form or in a parse error, whatever surrounds it.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use wpa::queue::QueueUri;
use wpa::queue::uri::redact_input;

#[derive(Debug, Arbitrary)]
struct Input {
    scheme: u8,
    in_query: bool,
    password: Vec<u8>,
    before: String,
    after: String,
}

const SCHEMES: [&str; 6] = ["redis", "rediss", "amqp", "amqps", "http+json", "https"];

fuzz_target!(|input: Input| {
    // A password worth hiding: long enough not to occur by chance in the rest of the text.
    let password: String = input
        .password
        .iter()
        .map(|b| char::from(b'a' + b % 26))
        .take(24)
        .collect();
    if password.len() < 8 {
        return;
    }
    let scheme = SCHEMES[usize::from(input.scheme) % SCHEMES.len()];
    let uri = if input.in_query {
        format!("{scheme}://{}?password={password}&{}", input.before, input.after)
    } else {
        format!("{scheme}://user:{password}@{}{}", input.before, input.after)
    };
    // Host names are printed lowercased, so an occurrence must not appear by case folding
    // either (`Lllllllll` as a host would print as the password `llllllll`).
    if uri.to_lowercase().matches(password.as_str()).count() != 1 {
        return;
    }
    let printed = match QueueUri::parse(&uri) {
        Ok(parsed) => parsed.redacted(),
        Err(e) => e.to_string(),
    };
    assert!(!printed.contains(&password), "{uri:?} printed as {printed:?}");
    let redacted = redact_input(&uri);
    assert!(!redacted.contains(&password), "{uri:?} redacted as {redacted:?}");
});
