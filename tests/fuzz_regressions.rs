//! Every input a fuzzer ever crashed on, replayed through the same property.
//!
//! Files live in `tests/fuzz_regressions/`, named `<target>-<what>.bin`.

use syncgate::protocol::{DecodeLimits, decode_client, encode_client};

/// The `decode_frame` fuzz target's property, shared with `fuzz/fuzz_targets/decode_frame.rs`.
fn decode_frame_property(data: &[u8]) {
    let limits = DecodeLimits::default();
    if let Ok(message) = decode_client(data, limits) {
        let once = encode_client(&message);
        let again = decode_client(&once, limits).expect("a re-encoded message decodes");
        assert_eq!(encode_client(&again), once);
    }
}

#[test]
fn every_recorded_crash_now_passes() {
    let dir = format!("{}/tests/fuzz_regressions", env!("CARGO_MANIFEST_DIR"));
    let mut count = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let data = std::fs::read(&path).unwrap();
        match name.split('-').next() {
            Some("decode_frame") => decode_frame_property(&data),
            _ => panic!("unknown fuzz target in {name}"),
        }
        count += 1;
    }
    assert!(count > 0);
}
