//! Arbitrary text as the domain names an issuer and an app normalise (docs/token-format.md §17). Must never panic; a
//! normalised name normalises to itself, reads back from its binding, is at most MAX_DOMAIN_LEN bytes of lowercase
//! ASCII, and covers itself; a host's covering bindings are all bindings that cover it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use verifier::{Domain, MAX_DOMAIN_LEN};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(domain) = Domain::parse(text) {
        assert!(domain.as_str().len() <= MAX_DOMAIN_LEN);
        assert!(domain.as_str().bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-.*".contains(&b)));
        assert_eq!(Domain::parse(domain.as_str()).expect("a normalised name parses"), domain);
        let binding = domain.binding();
        assert_eq!(Domain::from_binding(&binding).expect("a binding").expect("its own binding reads"), domain);
    }
    if let Ok(host) = Domain::host(text) {
        assert!(!host.is_wildcard() && host.covers(&host));
        for binding in host.covering_bindings() {
            let covering = Domain::from_binding(&binding).expect("a binding").expect("a normalised binding");
            assert!(covering.covers(&host), "{binding} covers {}", host.as_str());
        }
    }
    let _ = Domain::from_binding(text);
});
