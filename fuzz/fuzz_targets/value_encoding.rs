//! The store's record value encoding: whatever decodes re-encodes to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = rmpv::decode::read_value_with_max_depth(&mut &data[..], 64) else { return };
    let encoded = syncgate::store::encode_value(&value);
    let decoded = syncgate::store::decode_value(&encoded).expect("an encoded value decodes");
    assert_eq!(syncgate::store::encode_value(&decoded), encoded);
});
