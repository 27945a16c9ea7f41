//! Property: the credentials parser never panics; what it accepts is one clean token that
//! occurs in the header it came from; everything else is one of the typed refusals.
#![no_main]

use http::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use libfuzzer_sys::fuzz_target;
use modelgate::auth::{credentials, MAX_KEY_LEN};

fuzz_target!(|data: &[u8]| {
    // First byte picks the header layout; the rest splits into up to two header values.
    let Some((&shape, rest)) = data.split_first() else {
        return;
    };
    let (a, b) = match rest.iter().position(|&c| c == 0) {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => (rest, &[][..]),
    };
    let mut headers = HeaderMap::new();
    let mut add = |name: &'static str, v: &[u8]| {
        if let Ok(v) = HeaderValue::from_bytes(v) {
            headers.append(name, v);
        }
    };
    match shape % 4 {
        0 => add("authorization", a),
        1 => add("x-api-key", a),
        2 => {
            add("authorization", a);
            add("authorization", b);
        }
        _ => {
            add("x-api-key", a);
            add("authorization", b);
        }
    }
    if let Ok(token) = credentials(&headers) {
        assert!(!token.is_empty() && token.len() <= MAX_KEY_LEN);
        assert!(token.bytes().all(|c| c.is_ascii_graphic()));
        let source = headers
            .get(AUTHORIZATION)
            .or_else(|| headers.get("x-api-key"))
            .unwrap();
        assert!(source.to_str().unwrap().contains(token));
    }
});
