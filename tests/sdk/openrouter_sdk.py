"""Drives the gateway with OpenRouter's official Python SDK (`openrouter`).

Usage: python openrouter_sdk.py BASE_URL KEY ADMIN_KEY   (BASE_URL like http://127.0.0.1:PORT/api/v1)

The gateway sits in front of the tests' fake providers (tests/openrouter_clients.rs). The SDK
validates every answer against OpenRouter's schemas: a call that returns is an answer in
OpenRouter's shape. Exits non-zero with a message on the first failed check.
"""

import sys

from openrouter import OpenRouter, errors

base_url, key, admin_key = sys.argv[1], sys.argv[2], sys.argv[3]
TIDES = "Tides come mostly from the Moon's pull on the oceans."
USER = [{"role": "user", "content": "Why are there tides?"}]


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}", file=sys.stderr)
        sys.exit(1)


def raises(kind, call, what):
    try:
        call()
    except kind as e:
        return e
    except Exception as e:  # noqa: BLE001 - report what was raised instead
        check(False, f"{what}: raised {type(e).__name__}: {e}")
    check(False, f"{what}: no {kind.__name__} raised")


client = OpenRouter(
    api_key=key,
    server_url=base_url,
    http_referer="https://app.example",
    x_open_router_title="SDK checks",
    x_open_router_categories="cli-agent",
    timeout_ms=20000,
)
admin = OpenRouter(api_key=admin_key, server_url=base_url, timeout_ms=20000)

# Chat, plain, with every OpenRouter-only field: consumed, never sent upstream.
for model in ["openai/gpt", "anthropic/claude", "google/gemini-flash"]:
    r = client.chat.send(
        model=model,
        messages=USER,
        reasoning={"effort": "low"},
        session_id="session-1",
        plugins=[{"id": "context-compression"}],
        debug={"echo_upstream_body": False},
        provider={"sort": "price", "data_collection": "allow"},
        models=[model],
        top_k=4,
        temperature=0.2,
    )
    check(r.id.startswith("gen-"), f"{model}: id {r.id}")
    check(r.model == model, f"{model}: model {r.model}")
    check(r.choices[0].message.content, f"{model}: content {r.choices[0]}")
    check(r.usage.total_tokens > 0 and r.usage.cost > 0, f"{model}: usage {r.usage}")
    if model != "anthropic/claude":  # the Anthropic fake answers "4" unstreamed
        check(r.choices[0].message.content == TIDES, f"{model}: {r.choices[0].message.content!r}")
    last_id = r.id

# Streamed: the usage chunk ends the stream, asked for or not.
for model in ["openai/gpt", "anthropic/claude", "google/gemini-flash"]:
    chunks = list(client.chat.send(model=model, messages=USER, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    check(text == TIDES, f"{model}: streamed {text!r}")
    check(chunks[-1].choices == [] and chunks[-1].usage.cost > 0, f"{model}: usage chunk {chunks[-1]}")

# Tools.
tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}}}]
chunks = list(client.chat.send(model="openai/tool", messages=USER, tools=tools, stream=True))
calls = [t for c in chunks if c.choices for t in (c.choices[0].delta.tool_calls or [])]
check(calls and calls[0].function.name == "get_weather", f"tool calls {calls}")

# Reasoning, from Anthropic's thinking.
chunks = list(client.chat.send(model="anthropic/thinking", messages=USER, stream=True, reasoning={"max_tokens": 2048}))
reasoning = "".join(c.choices[0].delta.reasoning or "" for c in chunks if c.choices)
check(reasoning, f"reasoning text: {chunks[:3]}")
details = [d for c in chunks if c.choices for d in (c.choices[0].delta.reasoning_details or [])]
check(any(getattr(d, "signature", None) for d in details), f"reasoning details with a signature: {details}")

# Errors raise OpenRouter's classes.
e = raises(errors.NotFoundResponseError, lambda: client.chat.send(model="nope/model", messages=USER), "unknown model")
e = raises(errors.BadRequestResponseError, lambda: client.chat.send(model="openai/gpt:online", messages=USER), ":online")
check("online" in str(e), f"the refusal names the variant: {e}")
e = raises(
    errors.BadRequestResponseError,
    lambda: client.chat.send(model="openai/gpt", messages=USER, plugins=[{"id": "web"}]),
    "the web plugin",
)
raises(errors.UnauthorizedResponseError, lambda: OpenRouter(api_key="sk-wrong", server_url=base_url).chat.send(model="openai/gpt", messages=USER), "a bad key")

# The catalog.
models = client.models.list().result
check(models.total_count == 7 and len(models.data) == 7, f"models: {models.total_count}")
gpt = next(m for m in models.data if m.id == "openai/gpt")
check(gpt.description == "A fake GPT." and gpt.architecture.tokenizer == "GPT", f"model fields {gpt}")
check(gpt.architecture.input_modalities == ["text", "image"], f"modalities {gpt.architecture}")
check(gpt.pricing.prompt == "0.000003" and "tools" in gpt.supported_parameters, f"pricing {gpt.pricing}")
check(gpt.created == 1767225600 and gpt.canonical_slug == "openai/gpt", f"created {gpt.created}")
only = client.models.list(supported_parameters="top_k").result
check({m.id for m in only.data} == {"anthropic/claude", "anthropic/thinking", "google/gemini-flash"}, f"filter {[m.id for m in only.data]}")
check(client.models.count().data.count == 7, "count")
check(client.models.count(output_modalities="image").data.count == 0, "count with a filter")
eps = client.endpoints.list(author="openai", slug="gpt")
check(eps.data.id == "openai/gpt" and eps.data.endpoints[0].provider_name == "oai", f"endpoints {eps}")
ep = eps.data.endpoints[0]
check(ep.uptime_last_30m == 100 and ep.latency_last_30m.p50 >= 0, f"live health {ep}")
check(ep.status == 0, f"status {ep.status}")
raises(errors.NotFoundResponseError, lambda: client.endpoints.list(author="no", slug="model"), "endpoints of an unknown model")
providers = client.providers.list()
check({p.slug for p in providers.data} == {"oai", "anth", "gem"}, f"providers {providers}")

# The generation.
g = client.generations.get_generation(id=last_id).data
check(g.id == last_id and g.model == "google/gemini-flash" and g.provider_name == "gem", f"generation {g}")
check(g.total_cost > 0 and g.tokens_prompt > 0 and g.native_tokens_completion > 0, f"tokens and cost {g}")
check(g.http_referer == "https://app.example" and g.streamed is False, f"attribution {g}")
check(g.provider_responses[0].status == 200, f"provider responses {g.provider_responses}")
check(g.created_at.endswith("Z") or "+" in g.created_at, f"created_at {g.created_at}")

# Embeddings.
e = client.embeddings.generate(model="openai/embed", input=["a", "b"], encoding_format="float")
check(e.model == "openai/embed" and len(e.data) == 2, f"embeddings {e}")
check(e.data[1].embedding == [10.5, 11.5, 12.5] and e.usage.cost > 0, f"embeddings {e}")
check(e.id.startswith("gen-"), f"embeddings id {e.id}")

# The calling key.
me = client.api_keys.get_current_key_metadata().data
check(me.label and me.usage > 0 and me.limit is None, f"key {me}")
check(me.rate_limit.requests == 600 and me.rate_limit.interval == "1m", f"rate limit {me.rate_limit}")

# Key management and credits with the admin key.
made = admin.api_keys.create(name="sdk-made", limit=5.0, limit_reset="monthly", include_byok_in_limit=False)
check(made.key.startswith("sk-mg-") and made.data.limit == 5.0, f"created {made.data}")
h = made.data.hash
listed = admin.api_keys.list()
check(any(k.hash == h for k in listed.data), "listed")
got = admin.api_keys.get(hash=h).data
check(got.name == "sdk-made" and got.usage == 0, f"got {got}")
upd = admin.api_keys.update(hash=h, disabled=True, limit=7.5)
check(upd.data.disabled and upd.data.limit == 7.5, f"updated {upd.data}")
check(not any(k.hash == h for k in admin.api_keys.list().data), "a disabled key is left out")
check(any(k.hash == h for k in admin.api_keys.list(include_disabled="true").data), "unless asked")
check(admin.api_keys.delete(hash=h).DELETED is True, "deleted")
raises(errors.NotFoundResponseError, lambda: admin.api_keys.get(hash=h), "a deleted key")
credits = admin.credits.get_credits().data
check(credits.total_credits == 100 and credits.total_usage > 0, f"credits {credits}")

print("all checks passed")
