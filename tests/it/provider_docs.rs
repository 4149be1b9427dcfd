//! The docs follow the provider table: every provider's poll-interval flag is in the flag
//! reference and its grammar in the README's queueURI table, so a new row without docs
//! fails here.

use std::fs;
use std::path::PathBuf;

use wpa::queue::ProviderKind;

fn read(path: &str) -> String {
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path);
    fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

#[test]
fn every_provider_is_documented() {
    let configuration = read("docs/configuration.md");
    let readme = read("README.md");
    for kind in ProviderKind::all() {
        let spec = kind.spec();
        assert!(
            configuration.contains(&format!("| `{}` |", spec.interval_flag)),
            "docs/configuration.md has no row for {}",
            spec.interval_flag
        );
        // The queueURI table writes each grammar in backquotes, from its first scheme
        // (`amqp[s]://...`).
        let scheme = spec.schemes.first().expect("a provider has a scheme");
        assert!(
            readme.contains(&format!("`{scheme}")),
            "README.md has no `{scheme}...` grammar for {}",
            spec.name
        );
    }
}
