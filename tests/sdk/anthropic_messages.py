"""Drives the gateway's Messages API with the official `anthropic` Python SDK.

Usage: python anthropic_messages.py BASE_URL KEY   (BASE_URL like http://127.0.0.1:PORT)

The gateway sits in front of the tests' fake providers (tests/support): an `anthropic` one
(the native path), an OpenAI-kind and a Gemini-kind one (the translated path), each choosing its
behaviour by the upstream model name (tests/anthropic_clients.rs maps the public ids). Exits non-zero with
a message on the first failed check.
"""

import sys

import anthropic

base_url, key = sys.argv[1], sys.argv[2]
client = anthropic.Anthropic(base_url=base_url, api_key=key, max_retries=0, timeout=20)
MESSAGES = [{"role": "user", "content": "Why are there tides?"}]
TIDES = "Tides come mostly from the Moon's pull on the oceans."
TOOLS = [
    {"name": "get_weather", "description": "Weather", "input_schema": {"type": "object"}},
    {"name": "get_local_time", "description": "Time", "input_schema": {"type": "object"}},
]


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}", file=sys.stderr)
        sys.exit(1)


def expect_error(cls, what, **kwargs):
    try:
        client.messages.create(max_tokens=64, messages=MESSAGES, **kwargs)
    except cls as e:
        check(e.body["type"] == "error", f"{what}: Anthropic's envelope: {e.body}")
        return e
    except Exception as e:  # noqa: BLE001
        check(False, f"{what}: raised {type(e).__name__}, not {cls.__name__}: {e}")
    check(False, f"{what}: no error raised")


for model, path in [
    ("anthropic/claude", "native"),
    ("openai/gpt", "translated from OpenAI"),
    ("gemini/flash", "translated from Gemini"),
]:
    # Non-streamed.
    m = client.messages.create(model=model, max_tokens=64, messages=MESSAGES)
    check(m.model == model, f"{path}: the public model: {m.model}")
    check(m.content[-1].type == "text", f"{path}: a text block: {m.content}")
    check(m.stop_reason == "end_turn", f"{path}: stop reason {m.stop_reason}")
    check(m.usage.output_tokens > 0, f"{path}: usage {m.usage}")

    # Streamed, through the SDK's accumulating helper.
    with client.messages.stream(model=model, max_tokens=64, messages=MESSAGES) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    check(text == TIDES, f"{path}: streamed text {text!r}")
    check(final.content[0].text == TIDES, f"{path}: final message {final.content}")
    check(final.usage.input_tokens > 0, f"{path}: input tokens {final.usage}")
    check(final.stop_reason == "end_turn", f"{path}: streamed stop reason {final.stop_reason}")

# The native path's own bytes: the fixture's message, thinking signature and cache counts.
m = client.messages.create(model="anthropic/claude", max_tokens=64, messages=MESSAGES)
check([b.type for b in m.content] == ["thinking", "redacted_thinking", "text"], f"blocks {m.content}")
check(m.content[0].signature == "EqQBsig==", "the thinking signature survives")
check(m.usage.cache_read_input_tokens == 300, f"cache counts {m.usage}")

# Thinking with its signature, streamed natively.
with client.messages.stream(model="anthropic/thinking", max_tokens=2048, messages=MESSAGES) as s:
    final = s.get_final_message()
check(final.content[0].type == "thinking", f"thinking block {final.content}")
check(
    final.content[0].signature == "EqQBCkYIBRgCKkCz0fakesignatureOnlyForFixtures0Qm9vYmF6cXV4cXV1eA==",
    f"streamed signature {final.content[0].signature!r}",
)
check(final.content[1].text == "17 × 24 = 408.", "text after thinking")

# Tools both ways: native, and translated from an OpenAI tool call.
for model in ["anthropic/tool", "openai/tool"]:
    with client.messages.stream(model=model, max_tokens=256, messages=MESSAGES, tools=TOOLS) as s:
        final = s.get_final_message()
    calls = [b for b in final.content if b.type == "tool_use"]
    check(calls and calls[0].name == "get_weather", f"{model}: tool calls {final.content}")
    check(calls[0].input.get("city") == "Lyon", f"{model}: tool input {calls[0].input}")
    check(final.stop_reason == "tool_use", f"{model}: stop reason {final.stop_reason}")
# The answer goes back as a tool_result, translated for the OpenAI-kind provider.
m = client.messages.create(
    model="openai/gpt",
    max_tokens=64,
    tools=TOOLS,
    messages=MESSAGES
    + [
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Lyon"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "21 C"}]},
    ],
)
check(m.content[0].text == TIDES, "a turn after a tool result")

# Errors raise the SDK's own classes.
expect_error(anthropic.NotFoundError, "an unknown model", model="nope/none")
expect_error(anthropic.OverloadedError, "an overloaded upstream", model="anthropic/busy")
bad = anthropic.Anthropic(base_url=base_url, api_key="sk-wrong", max_retries=0)
try:
    bad.messages.create(model="anthropic/claude", max_tokens=8, messages=MESSAGES)
    check(False, "a wrong key is refused")
except anthropic.AuthenticationError as e:
    check(e.status_code == 401, "401")
try:
    client.messages.create(model="anthropic/claude", max_tokens=8, messages="not a list")
    check(False, "a bad body is refused")
except anthropic.BadRequestError as e:
    check("messages" in str(e), f"the field is named: {e}")

# A cut stream raises, after the text that came.
try:
    with client.messages.stream(model="anthropic/cut", max_tokens=64, messages=MESSAGES) as s:
        for _ in s.text_stream:
            pass
    check(False, "a cut stream raises")
except anthropic.APIError as e:
    check("stream" in str(e) or "message_stop" in str(e) or "failed" in str(e), f"cut: {e}")

# count_tokens: Anthropic's own count, and the local estimate for another kind.
n = client.messages.count_tokens(model="anthropic/claude", messages=MESSAGES)
check(n.input_tokens == 1234, f"forwarded count {n}")
n = client.messages.count_tokens(model="openai/gpt", messages=MESSAGES)
check(0 < n.input_tokens < 100, f"estimated count {n}")

print("all checks passed")
