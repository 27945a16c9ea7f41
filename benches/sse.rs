//! Hot paths: SSE decoding, OpenAI chunk normalisation, request parsing, answer rendering.
//! `cargo bench --bench sse`; throughput in MB/s of upstream bytes in.

use bytes::BytesMut;
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use modelgate::decode::parse_chat_request;
use modelgate::provider::ProviderKind;
use modelgate::sse::SseDecoder;
use modelgate::stream_normalize::{render_completion, OpenAiStream, StreamContext, Translator};
use modelgate::GenerationId;

fn fixture(name: &str) -> Vec<u8> {
    let dir = name.split('_').next().unwrap_or_default();
    std::fs::read(format!(
        "{}/tests/fixtures/{dir}/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn ctx() -> StreamContext {
    let mut ctx = StreamContext::new(GenerationId::new(), "vendor/model", "provider");
    ctx.include_usage = true;
    ctx
}

fn benches(c: &mut Criterion) {
    let stream = fixture("openai_text.sse");
    let mut g = c.benchmark_group("sse");
    g.throughput(Throughput::Bytes(stream.len() as u64));
    g.bench_function("decode", |b| {
        b.iter(|| {
            let mut d = SseDecoder::new();
            d.feed(black_box(&stream));
            d.finish();
            let mut n = 0;
            while let Some(ev) = d.next_event() {
                n += ev.data.len();
            }
            n
        })
    });
    g.bench_function("decode_in_64_byte_reads", |b| {
        b.iter(|| {
            let mut d = SseDecoder::new();
            let mut n = 0;
            for piece in black_box(&stream).chunks(64) {
                d.feed(piece);
                while let Some(ev) = d.next_event() {
                    n += ev.data.len();
                }
            }
            n
        })
    });
    g.bench_function("decode_and_normalise", |b| {
        let mut out = BytesMut::with_capacity(4096);
        b.iter(|| {
            let mut d = SseDecoder::new();
            let mut s = OpenAiStream::new(ctx());
            out.clear();
            d.feed(black_box(&stream));
            d.finish();
            while let Some(ev) = d.next_event() {
                s.on_event(&ev, &mut out);
            }
            out.len()
        })
    });
    g.finish();

    // The translators, MB/s of upstream SSE in.
    let mut g = c.benchmark_group("translate");
    for (kind, name) in [
        (ProviderKind::OpenAi, "openai_tool.sse"),
        (ProviderKind::Anthropic, "anthropic_text.sse"),
        (ProviderKind::Anthropic, "anthropic_tool.sse"),
        (ProviderKind::Gemini, "gemini_text.sse"),
        (ProviderKind::Gemini, "gemini_tool.sse"),
    ] {
        let stream = fixture(name);
        g.throughput(Throughput::Bytes(stream.len() as u64));
        g.bench_function(name.trim_end_matches(".sse"), |b| {
            let mut out = BytesMut::with_capacity(8192);
            b.iter(|| {
                let mut d = SseDecoder::new();
                let mut s = Translator::new(kind, ctx());
                out.clear();
                d.feed(black_box(&stream));
                d.finish();
                while let Some(ev) = d.next_event() {
                    s.on_event(&ev, &mut out);
                }
                s.on_end(&mut out);
                out.len()
            })
        });
    }
    g.finish();

    let request = br#"{"model":"vendor/model","messages":[{"role":"system","content":"You are brief."},{"role":"user","content":"Why are there tides? Answer in one sentence."}],"temperature":0.2,"stream":false}"#;
    let mut g = c.benchmark_group("json");
    g.throughput(Throughput::Bytes(request.len() as u64));
    g.bench_function("parse_request", |b| {
        b.iter(|| parse_chat_request(black_box(request)).unwrap())
    });
    g.bench_function("serialise_request", |b| {
        let req = parse_chat_request(request).unwrap();
        b.iter(|| serde_json::to_vec(black_box(&req)).unwrap())
    });
    let answer = br#"{"id":"chatcmpl-D3mo7Xw2QbGkz9VfYtR1aLpE","object":"chat.completion","created":1767225600,"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"message":{"role":"assistant","content":"Tides come mostly from the Moon's pull on the oceans.","refusal":null,"annotations":[]},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":18,"completion_tokens":11,"total_tokens":29},"service_tier":"default","system_fingerprint":"fp_7c1d2a9e40"}"#;
    g.throughput(Throughput::Bytes(answer.len() as u64));
    g.bench_function("parse_and_render_answer", |b| {
        let ctx = ctx();
        b.iter(|| render_completion(black_box(answer), &ctx).unwrap())
    });
    g.finish();
}

criterion_group!(sse, benches);
criterion_main!(sse);
