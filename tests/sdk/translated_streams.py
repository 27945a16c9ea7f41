"""The official `openai` Python SDK's .stream() helper over translated Anthropic and Gemini streams.

Usage: python translated_streams.py BASE_URL   (the gateway in front of a fake Anthropic provider
named `anth` and a fake Gemini provider named `gem`, both replaying the wire fixtures).
Exits non-zero with a message on the first failed check.
"""

import json
import re
import sys

import openai

client = openai.OpenAI(base_url=sys.argv[1], api_key="sk-client", max_retries=0, timeout=20)
MESSAGES = [{"role": "user", "content": "Weather and local time in Lyon?"}]
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}},
    {"type": "function", "function": {"name": "get_local_time", "parameters": {"type": "object"}}},
]


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}", file=sys.stderr)
        sys.exit(1)


def final_of(model):
    with client.chat.completions.stream(
        model=model, messages=MESSAGES, tools=TOOLS, stream_options={"include_usage": True}
    ) as s:
        for _ in s:
            pass
        return s.get_final_completion()


# Anthropic: text preamble, then two tool_use blocks (block indexes 1 and 2, dense 0 and 1).
final = final_of("anth/claude")
msg = final.choices[0].message
check(msg.role == "assistant", f"role once: {msg.role}")
check(msg.content == "I'll check the forecast and the local time.", f"text: {msg.content!r}")
calls = msg.tool_calls
check(len(calls) == 2, f"two tool calls: {calls}")
check(calls[0].id == "toolu_01Ab3Cd4Ef5Gh6Ij7Kl8Mn9P", f"id once: {calls[0].id}")
check(calls[0].function.name == "get_weather", f"name once: {calls[0].function.name}")
check(json.loads(calls[0].function.arguments) == {"city": "Lyon", "unit": "celsius"}, "arguments")
check(calls[1].function.name == "get_local_time", f"second call: {calls[1].function.name}")
check(calls[1].function.arguments == "{}", f"no arguments become {{}}: {calls[1].function.arguments!r}")
check(final.choices[0].finish_reason == "tool_calls", "finish reason")
check(final.usage.prompt_tokens == 412 and final.usage.completion_tokens == 96, f"usage: {final.usage}")

# Gemini: two whole function calls in one event, generated ids, the signature on the first.
final = final_of("gem/gemini")
calls = final.choices[0].message.tool_calls
check(len(calls) == 2, f"two tool calls: {calls}")
check(all(re.fullmatch(r"call_[0-9a-f]{24}", c.id) for c in calls), f"generated ids: {[c.id for c in calls]}")
check(calls[0].id != calls[1].id, "distinct ids")
check(json.loads(calls[0].function.arguments) == {"city": "Lyon", "unit": "celsius"}, "arguments")
check(calls[1].function.arguments == "{}", "empty args")
extra = calls[0].model_extra or {}
check(
    extra.get("extra_content", {}).get("google", {}).get("thought_signature", "").startswith("CiQB"),
    f"signature carried: {extra}",
)
check(final.choices[0].finish_reason == "tool_calls", "STOP with calls is tool_calls")
check(final.usage.completion_tokens_details.reasoning_tokens == 58, f"reasoning tokens: {final.usage}")

print("all checks passed")
