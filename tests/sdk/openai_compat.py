"""Drives the gateway with the official `openai` Python SDK.

Usage: python openai_compat.py BASE_URL   (BASE_URL like http://127.0.0.1:PORT/v1)

The gateway sits in front of the tests' fake provider (tests/support), whose behaviour is chosen
by the model name. Exits non-zero with a message on the first failed check.
"""

import sys

import openai

base_url = sys.argv[1]
client = openai.OpenAI(base_url=base_url, api_key="sk-client", max_retries=0, timeout=20)
MESSAGES = [{"role": "user", "content": "Why are there tides?"}]
EXPECTED = "Tides come mostly from the Moon's pull on the oceans."


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}", file=sys.stderr)
        sys.exit(1)


# Non-streaming.
r = client.chat.completions.create(model="vendor/fake-model", messages=MESSAGES)
check(r.id.startswith("gen-"), f"id is the generation id: {r.id}")
check(r.model == "vendor/fake-model", f"model is the public id: {r.model}")
check(r.choices[0].message.content == EXPECTED, "content")
check(r.usage.total_tokens == 29, "usage")

# Streaming with include_usage: the last chunk has no choices and the usage.
chunks = list(
    client.chat.completions.create(
        model="vendor/fake-model", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
)
text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
check(text == EXPECTED, f"streamed text: {text!r}")
check(chunks[-1].choices == [] and chunks[-1].usage.total_tokens == 29, "final usage chunk")
check(all(c.usage is None for c in chunks[:-1]), "usage only on the last chunk")
check(len({c.id for c in chunks}) == 1, "one id for the whole stream")

# Streaming without include_usage: the usage chunk all the same, as OpenRouter sends it; the
# SDK reads it as a chunk with no choices.
chunks = list(client.chat.completions.create(model="vendor/fake-model", messages=MESSAGES, stream=True))
check(chunks[-1].choices == [] and chunks[-1].usage.cost > 0, "the usage chunk, not asked for")
check(all(c.choices for c in chunks[:-1]), "every other chunk has its choice")

# The .stream() helper accumulates text and tool calls (it concatenates repeated strings, so a
# repeated role, id or name would show here).
with client.chat.completions.stream(model="vendor/fake-model", messages=MESSAGES) as s:
    for _ in s:
        pass
    final = s.get_final_completion()
check(final.choices[0].message.content == EXPECTED, "helper text")
check(final.choices[0].message.role == "assistant", f"helper role: {final.choices[0].message.role!r}")

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"type": "string"}}},
        },
    }
]
with client.chat.completions.stream(model="fake/tool", messages=MESSAGES, tools=TOOLS) as s:
    for _ in s:
        pass
    final = s.get_final_completion()
calls = final.choices[0].message.tool_calls
check(len(calls) == 1, f"one tool call: {calls}")
check(calls[0].id == "call_Qm3b7LxV0cTgH2aZ5nKe8RwY", f"tool call id: {calls[0].id}")
check(calls[0].function.name == "get_weather", f"tool name: {calls[0].function.name}")
check(calls[0].function.arguments == '{"city":"Lyon","unit":"celsius"}', "tool arguments")
check(final.choices[0].finish_reason == "tool_calls", "finish reason")

# Errors raise the right exception classes.
cases = [
    ("fake/fail-400", openai.BadRequestError),
    ("fake/fail-429", openai.RateLimitError),
    ("no-such-model", openai.NotFoundError),
    ("fake/fail-500", openai.InternalServerError),
    ("fake/fail-529", openai.InternalServerError),
]
for model, cls in cases:
    for stream in (False, True):
        try:
            client.chat.completions.create(model=model, messages=MESSAGES, stream=stream)
        except cls as e:
            check(e.body is not None, f"{model}: error body")
            continue
        except Exception as e:  # noqa: BLE001
            check(False, f"{model} stream={stream}: expected {cls.__name__}, got {type(e).__name__}: {e}")
        check(False, f"{model} stream={stream}: expected {cls.__name__}, got no error")

try:
    client.chat.completions.create(model="vendor/fake-model", messages="not a list")
except openai.BadRequestError as e:
    check("messages" in str(e), f"400 names the field: {e}")
else:
    check(False, "bad input must raise BadRequestError")

# An error after the 200 raises APIError while iterating, after the content already sent.
for model in ("fake/in-stream-error", "fake/cut", "fake/no-done"):
    seen = []
    try:
        for c in client.chat.completions.create(model=model, messages=MESSAGES, stream=True):
            if c.choices:
                seen.append(c.choices[0].delta.content or "")
    except openai.APIError:
        check(len(seen) >= 1, f"{model}: content before the error")
        continue
    check(False, f"{model}: a broken stream must raise, not end quietly")

print("openai SDK compatibility: all checks passed")
