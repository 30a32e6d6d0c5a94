//! Bytes → client message, and decode → encode → decode stability.
#![no_main]

use libfuzzer_sys::fuzz_target;
use syncgate::protocol::{DecodeLimits, decode_client, encode_client};

fuzz_target!(|data: &[u8]| {
    let limits = DecodeLimits::default();
    if let Ok(message) = decode_client(data, limits) {
        // Whatever decodes must re-encode to a form that decodes to the same bytes again.
        let once = encode_client(&message);
        let again = decode_client(&once, limits).expect("a re-encoded message decodes");
        assert_eq!(encode_client(&again), once);
    }
});
