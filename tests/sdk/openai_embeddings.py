"""Drives the gateway's embeddings API with the official `openai` Python SDK.

Usage: python openai_embeddings.py BASE_URL KEY   (BASE_URL like http://127.0.0.1:PORT/v1)

The gateway sits in front of the tests' OpenAI-, Gemini- and Bedrock-kind embeddings fakes
(tests/support, tests/embeddings.rs). Exits non-zero with a message on the first failed check.
"""

import sys

import openai

base_url, key = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=20)


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}", file=sys.stderr)
        sys.exit(1)


EXPECTED = {
    # The OpenAI-kind fake: input i, dimension d -> i * 10 + d + 0.5.
    "openai/text-embedding-3-small": [[0.5, 1.5, 2.5], [10.5, 11.5, 12.5]],
    # The Gemini-kind fake: the same vector for every input.
    "google/gemini-embedding": [[0.25, 0.5, -1.0], [0.25, 0.5, -1.0]],
    # The Bedrock-kind fake's Cohere model: input i -> [i, 0.5].
    "cohere/embed-english": [[0.0, 0.5], [1.0, 0.5]],
}

for model, vectors in EXPECTED.items():
    # The SDK's default: it asks for base64 and decodes the floats itself.
    r = client.embeddings.create(model=model, input=["first text", "second"])
    check(r.object == "list", f"{model}: object {r.object}")
    check(r.model == model, f"{model}: the public model {r.model}")
    got = [list(d.embedding) for d in r.data]
    check(got == vectors, f"{model}: base64 vectors {got}")
    check([d.index for d in r.data] == [0, 1], f"{model}: indexes")
    check(r.usage.prompt_tokens > 0, f"{model}: usage {r.usage}")
    check(r.usage.total_tokens == r.usage.prompt_tokens, f"{model}: total {r.usage}")

    # Numbers, asked for.
    r = client.embeddings.create(model=model, input="first text", encoding_format="float")
    check([list(d.embedding) for d in r.data] == vectors[:1], f"{model}: float vectors {r.data}")

    # The raw answer carries the generation id.
    raw = client.embeddings.with_raw_response.create(model=model, input="x")
    check(raw.headers.get("x-generation-id", "").startswith("gen-"), f"{model}: generation id")

try:
    client.embeddings.create(model="openai/text-embedding-3-small", input=[])
    check(False, "an empty input was accepted")
except openai.BadRequestError as e:
    check(e.body.get("param") == "input", f"the empty input's error {e.body}")

try:
    client.embeddings.create(model="nobody/none", input="x")
    check(False, "an unknown model was accepted")
except openai.NotFoundError:
    pass

try:
    openai.OpenAI(base_url=base_url, api_key="sk-wrong", max_retries=0).embeddings.create(
        model="openai/text-embedding-3-small", input="x"
    )
    check(False, "a wrong key was accepted")
except openai.AuthenticationError:
    pass

print("all checks passed")
