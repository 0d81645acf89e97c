//! Arbitrary text as the two air-gapped codes an issuer reads from people: `ACT1-` activation requests and `DEA1-`
//! deactivation codes. Must never panic, and whatever parses must survive its own text form unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use verifier::{ActivationRequest, DeactivationCode};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(request) = ActivationRequest::from_code(text) {
        let text = request.to_code().expect("a request that parsed encodes again");
        let again = ActivationRequest::from_code(&text).expect("a request's own code parses");
        assert_eq!(again, request);
    }
    if let Ok(code) = DeactivationCode::from_code(text) {
        let again = DeactivationCode::from_code(&code.to_code()).expect("a code's own text parses");
        assert_eq!(again, code);
    }
});
