//! Bytes → client message, and decode → encode → decode stability; the
//! batch reader and the general decoder agree on every input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use syncgate::protocol::{DecodeLimits, decode_client, decode_client_tree, encode_client};

fuzz_target!(|data: &[u8]| {
    let limits = DecodeLimits::default();
    let decoded = decode_client(data, limits);
    // Compared as encodings: a NaN in a value is not equal to itself.
    match (&decoded, decode_client_tree(data, limits)) {
        (Ok(fast), Ok(tree)) => assert_eq!(encode_client(fast), encode_client(&tree), "the batch reader disagrees"),
        (fast, tree) => assert_eq!(fast, &tree, "the batch reader disagrees with the general decoder"),
    }
    if let Ok(message) = decoded {
        // Whatever decodes must re-encode to a form that decodes to the same bytes again.
        let once = encode_client(&message);
        let again = decode_client(&once, limits).expect("a re-encoded message decodes");
        assert_eq!(encode_client(&again), once);
    }
});
