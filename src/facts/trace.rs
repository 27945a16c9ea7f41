//! The W3C trace context a request is served under, and the one each attempt carries upstream.

use http::{HeaderMap, HeaderValue};

/// A position in a distributed trace: the trace, the span the work is under, whether the
/// trace is sampled, and the vendors' `tracestate` (W3C Trace Context).
///
/// The telemetry layer puts one in the request extensions: the server span of the request,
/// in the client's trace when it sent a valid `traceparent`, in a new one otherwise. The
/// fallback layer gives each attempt's request a child of it ([`child`](Self::child)): the
/// attempt's own span. [`Dispatch`](crate::Dispatch) sends the one it finds to the provider as
/// `traceparent` and `tracestate`. Without one, nothing is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// The trace id: 16 bytes, not all zero.
    pub trace_id: [u8; 16],
    /// The span id: 8 bytes, not all zero.
    pub span_id: [u8; 8],
    /// Whether the trace is sampled (the `sampled` flag, passed on to the provider).
    pub sampled: bool,
    /// The `tracestate` header, passed on unchanged.
    pub state: Option<HeaderValue>,
}

/// The `traceparent` header.
pub const TRACEPARENT: &str = "traceparent";
/// The `tracestate` header.
pub const TRACESTATE: &str = "tracestate";

impl TraceContext {
    /// A new trace: random ids.
    pub fn new_root(sampled: bool) -> Self {
        TraceContext {
            trace_id: nonzero_u128().to_be_bytes(),
            span_id: nonzero_u64().to_be_bytes(),
            sampled,
            state: None,
        }
    }

    /// A new span in the same trace, under this one (its parent).
    pub fn child(&self) -> Self {
        TraceContext {
            span_id: nonzero_u64().to_be_bytes(),
            ..self.clone()
        }
    }

    /// The context a request's headers carry: a valid `traceparent` (version `00`, or a later
    /// version read as `00` as the specification asks) and its `tracestate`. `None` when the
    /// header is absent or malformed (a new trace starts then).
    pub fn from_headers(headers: &HeaderMap) -> Option<Self> {
        let parent = headers.get(TRACEPARENT)?;
        let (trace_id, span_id, flags) = parse_traceparent(parent.as_bytes())?;
        Some(TraceContext {
            trace_id,
            span_id,
            sampled: flags & 1 == 1,
            state: headers
                .get(TRACESTATE)
                .filter(|v| !v.is_empty() && v.len() <= 512)
                .cloned(),
        })
    }

    /// The `traceparent` value: `00-<trace id>-<span id>-<flags>`.
    pub fn traceparent(&self) -> HeaderValue {
        let mut out = [0u8; 55];
        out[..3].copy_from_slice(b"00-");
        hex_into(&self.trace_id, &mut out[3..35]);
        out[35] = b'-';
        hex_into(&self.span_id, &mut out[36..52]);
        out[52..].copy_from_slice(if self.sampled { b"-01" } else { b"-00" });
        HeaderValue::from_bytes(&out).expect("hex digits and dashes are a valid header value")
    }

    /// Writes `traceparent` (and `tracestate`, when there is one) into `headers`.
    pub fn inject(&self, headers: &mut HeaderMap) {
        headers.insert(TRACEPARENT, self.traceparent());
        if let Some(state) = &self.state {
            headers.insert(TRACESTATE, state.clone());
        }
    }
}

/// `version-traceid-parentid-flags`, lowercase hex; all-zero ids and version `ff` are invalid.
/// A version after `00` may carry more fields after the flags, behind a dash.
pub fn parse_traceparent(v: &[u8]) -> Option<([u8; 16], [u8; 8], u8)> {
    if v.len() < 55 || v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
        return None;
    }
    let version = unhex::<1>(&v[..2])?[0];
    if version == 0xff || (version == 0 && v.len() != 55) || (v.len() > 55 && v[55] != b'-') {
        return None;
    }
    let trace_id = unhex::<16>(&v[3..35])?;
    let span_id = unhex::<8>(&v[36..52])?;
    let flags = unhex::<1>(&v[53..55])?[0];
    if trace_id == [0; 16] || span_id == [0; 8] {
        return None;
    }
    Some((trace_id, span_id, flags))
}

/// Lowercase hex only, as the specification requires.
fn unhex<const N: usize>(s: &[u8]) -> Option<[u8; N]> {
    fn digit(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        }
    }
    let mut out = [0u8; N];
    for (i, pair) in s.chunks_exact(2).enumerate() {
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

fn hex_into(bytes: &[u8], out: &mut [u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in bytes.iter().enumerate() {
        out[2 * i] = HEX[usize::from(b >> 4)];
        out[2 * i + 1] = HEX[usize::from(b & 0xf)];
    }
}

fn nonzero_u128() -> u128 {
    loop {
        let v = fastrand::u128(..);
        if v != 0 {
            return v;
        }
    }
}

fn nonzero_u64() -> u64 {
    loop {
        let v = fastrand::u64(..);
        if v != 0 {
            return v;
        }
    }
}

/// A request extension: the prompt and the completion are captured for the request's spans
/// (telemetry's `capture_content`). Stream normalisation then keeps the answer's text in the
/// [`UsageSlot`](super::UsageSlot)'s report.
#[derive(Debug, Clone, Copy, Default)]
pub struct CaptureContent;

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn the_specifications_example_reads_and_writes_back() {
        let mut h = HeaderMap::new();
        h.insert(TRACEPARENT, HeaderValue::from_static(EXAMPLE));
        h.insert(
            TRACESTATE,
            HeaderValue::from_static("rojo=00f067aa0ba902b7"),
        );
        let cx = TraceContext::from_headers(&h).unwrap();
        assert!(cx.sampled);
        assert_eq!(cx.traceparent(), EXAMPLE);
        let child = cx.child();
        assert_eq!(child.trace_id, cx.trace_id);
        assert_ne!(child.span_id, cx.span_id);
        let mut out = HeaderMap::new();
        child.inject(&mut out);
        assert_eq!(out[TRACESTATE], "rojo=00f067aa0ba902b7");
        assert!(out[TRACEPARENT]
            .to_str()
            .unwrap()
            .starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
    }

    #[test]
    fn malformed_headers_start_a_new_trace() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(parse_traceparent(bad.as_bytes()), None, "{bad}");
        }
        // A later version may carry more, behind a dash.
        let later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-more";
        assert!(parse_traceparent(later.as_bytes()).is_some());
    }

    #[test]
    fn a_new_root_is_random_and_valid() {
        let a = TraceContext::new_root(false);
        let b = TraceContext::new_root(false);
        assert_ne!(a.trace_id, b.trace_id);
        let v = a.traceparent();
        assert_eq!(
            parse_traceparent(v.as_bytes()),
            Some((a.trace_id, a.span_id, 0))
        );
    }
}
