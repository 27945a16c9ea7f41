"""Drives the gateway's Responses API with the official `openai` Python SDK.

Usage: python openai_responses.py BASE_URL KEY   (BASE_URL like http://127.0.0.1:PORT/v1)

The gateway sits in front of the tests' fake providers of every kind (tests/support); the
public model chooses the provider and its behaviour (tests/openai_clients.rs). Exits non-zero
with a message on the first failed check.
"""

import json
import sys

import openai
from pydantic import BaseModel

base_url, key = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=20)
TIDES = "Tides come mostly from the Moon's pull on the oceans."


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}", file=sys.stderr)
        sys.exit(1)


for model in ["openai/gpt", "anthropic/claude", "gemini/flash"]:
    r = client.responses.create(model=model, input="Why are there tides?", instructions="Be brief.")
    check(r.id.startswith("gen-"), f"{model}: the generation id {r.id}")
    check(r.status == "completed", f"{model}: status {r.status}")
    check(r.model == model, f"{model}: the public model {r.model}")
    check(r.usage.total_tokens > 0, f"{model}: usage {r.usage}")
    if model != "anthropic/claude":  # the Anthropic fake answers "4" unstreamed
        check(r.output_text == TIDES, f"{model}: output_text {r.output_text!r}")

    # The stream helper, which checks the event grammar as it accumulates.
    with client.responses.stream(model=model, input="Why are there tides?") as s:
        deltas = "".join(e.delta for e in s if e.type == "response.output_text.delta")
        final = s.get_final_response()
    check(deltas == TIDES, f"{model}: streamed text {deltas!r}")
    check(final.output_text == TIDES, f"{model}: final response {final.output_text!r}")
    check(final.usage.total_tokens > 0, f"{model}: streamed usage {final.usage}")

# Natively served by an endpoint that speaks the Responses API.
r = client.responses.create(model="openai/native", input="hi")
check(r.output_text == "Hi there" and r.model == "openai/native", f"native: {r.output_text!r} {r.model}")
with client.responses.stream(model="openai/native", input="hi") as s:
    final = s.get_final_response()
check(final.output_text == "Hi there" and final.usage.total_tokens == 26, f"native stream: {final}")

# Raw events: increasing sequence numbers, one terminal event.
events = list(client.responses.create(model="openai/gpt", input="hi", stream=True))
check([e.sequence_number for e in events] == list(range(len(events))), "sequence numbers")
check(events[0].type == "response.created" and events[-1].type == "response.completed", "terminal")

# Tools: the call comes back as a function_call item, and its output goes back in.
tools = [{"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {}}}]
r = client.responses.create(model="openai/tool", input="Weather in Lyon?", tools=tools)
calls = [o for o in r.output if o.type == "function_call"]
check(calls and calls[0].name == "get_weather", f"function call {r.output}")
check(json.loads(calls[0].arguments)["city"] == "Lyon", "arguments")
r = client.responses.create(
    model="openai/gpt",
    tools=tools,
    input=[
        {"role": "user", "content": "Weather in Lyon?"},
        {"type": "function_call", "call_id": calls[0].call_id, "name": "get_weather", "arguments": calls[0].arguments},
        {"type": "function_call_output", "call_id": calls[0].call_id, "output": "21 C"},
    ],
)
check(r.output_text == TIDES, "a turn after a function call output")


# Structured output: the schema reaches the provider as the chat request's.
class Tide(BaseModel):
    cause: str


r = client.responses.create(
    model="openai/gpt",
    input="Why tides?",
    text={"format": {"type": "json_schema", "name": "tide", "schema": Tide.model_json_schema(), "strict": True}},
)
check(r.status == "completed", "structured output")

# Reasoning from Claude, with what the next turn needs.
with client.responses.stream(model="anthropic/thinking", input="17*24?", include=["reasoning.encrypted_content"]) as s:
    r = s.get_final_response()
reasoning = [o for o in r.output if o.type == "reasoning"]
check(reasoning and "408" in reasoning[0].summary[0].text, f"streamed reasoning {r.output}")
r = client.responses.create(model="anthropic/claude", input="2+2?")
reasoning = [o for o in r.output if o.type == "reasoning"]
check(reasoning and reasoning[0].summary[0].text == "Sum.", f"reasoning {r.output}")

# Errors raise the SDK's own classes.
try:
    client.responses.create(model="nope/none", input="hi")
    check(False, "an unknown model is refused")
except openai.NotFoundError:
    pass
try:
    client.responses.create(model="openai/gpt", input="hi", previous_response_id="resp_1")
    check(False, "previous_response_id is refused")
except openai.BadRequestError as e:
    check("stateless" in str(e), f"says why: {e}")
try:
    openai.OpenAI(base_url=base_url, api_key="sk-wrong", max_retries=0).responses.create(model="openai/gpt", input="hi")
    check(False, "a wrong key is refused")
except openai.AuthenticationError:
    pass
try:
    client.responses.retrieve("resp_1")
    check(False, "nothing is stored")
except openai.NotFoundError:
    pass

# A cut stream ends in response.failed.
events = list(client.responses.create(model="openai/cut", input="hi", stream=True))
check(events[-1].type == "response.failed", f"cut: {events[-1].type}")

print("all checks passed")
