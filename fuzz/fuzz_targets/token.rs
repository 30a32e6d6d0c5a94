//! Token handling up to signature verification: header peeking, kid, claims.
#![no_main]

use libfuzzer_sys::fuzz_target;
use syncgate::auth::{JwtKey, JwtSettings, JwtVerifier};

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else { return };
    thread_local! {
        static VERIFIER: JwtVerifier = JwtVerifier::new(JwtSettings::new(JwtKey::Secret(b"fuzz-secret-fuzz-secret-fuzz-sec".to_vec()))).unwrap();
    }
    VERIFIER.with(|v| {
        // Never accepted without the key; never panics.
        assert!(v.check(token, 1_800_000_000).is_err());
    });
    // Also with a structurally valid prefix, so the fuzzer reaches claim parsing.
    let b64 = |s: &[u8]| {
        const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in s.chunks(3) {
            let n = chunk.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b)) << (8 * (3 - chunk.len()));
            for i in 0..=chunk.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        out
    };
    let forged = format!("{}.{}.{}", b64(br#"{"alg":"HS256","kid":"k"}"#), b64(data), b64(b"sig"));
    VERIFIER.with(|v| assert!(v.check(&forged, 1_800_000_000).is_err()));
});
