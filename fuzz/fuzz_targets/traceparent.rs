//! Properties: reading a `traceparent` never panics; what it accepts is written back as a valid
//! version-00 header that reads as the same trace, span and sampling flag, and a child of it
//! stays in the trace under another span.
#![no_main]

use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use modelgate::facts::{parse_traceparent, TraceContext, TRACEPARENT, TRACESTATE};

fuzz_target!(|data: &[u8]| {
    let (parent, state) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], Some(&data[i + 1..])),
        None => (data, None),
    };
    let parsed = parse_traceparent(parent);
    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_bytes(parent) {
        headers.insert(TRACEPARENT, v);
    }
    if let Some(Ok(v)) = state.map(HeaderValue::from_bytes) {
        headers.insert(TRACESTATE, v);
    }
    let Some(cx) = TraceContext::from_headers(&headers) else {
        return;
    };
    let (trace, span, flags) = parsed.expect("a context came from a valid traceparent");
    assert_eq!((cx.trace_id, cx.span_id, cx.sampled), (trace, span, flags & 1 == 1));
    let written = cx.traceparent();
    assert_eq!(written.len(), 55);
    let again = parse_traceparent(written.as_bytes()).expect("written back valid");
    assert_eq!((again.0, again.1, again.2 & 1 == 1), (trace, span, cx.sampled));
    let child = cx.child();
    assert_eq!(child.trace_id, cx.trace_id);
    assert_ne!(child.span_id, [0; 8]);
    let mut out = HeaderMap::new();
    child.inject(&mut out);
    assert_eq!(out.get(TRACESTATE), cx.state.as_ref());
});
