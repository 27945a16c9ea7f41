// Drives the gateway with OpenRouter's official TypeScript SDK (`@openrouter/sdk`), which
// validates every answer against OpenRouter's schemas (zod): a call that returns is an answer
// in OpenRouter's shape.
//
// Usage: node openrouter_sdk.mjs BASE_URL KEY ADMIN_KEY   (BASE_URL like
// http://127.0.0.1:PORT/api/v1), with OPENROUTER_SDK_DIR at the package's folder
// (scripts/test.sh installs it into .tools/openrouter-sdk). Exits non-zero with a message on
// the first failed check.
import { createRequire } from "node:module";
import path from "node:path";

const require = createRequire(path.join(process.env.OPENROUTER_SDK_DIR, "package.json"));
const { OpenRouter } = await import(require.resolve("@openrouter/sdk"));

const [serverURL, apiKey, adminKey] = process.argv.slice(2);
const client = new OpenRouter({ apiKey, serverURL, httpReferer: "https://app.example", appTitle: "TS checks" });
const admin = new OpenRouter({ apiKey: adminKey, serverURL });
const TIDES = "Tides come mostly from the Moon's pull on the oceans.";
const USER = [{ role: "user", content: "Why are there tides?" }];

function check(cond, what) {
  if (!cond) {
    console.error(`FAILED: ${what}`);
    process.exit(1);
  }
}

async function rejects(call, status, what) {
  try {
    await call();
  } catch (e) {
    check(e.statusCode === status, `${what}: ${e.name} ${e.statusCode} ${e.message}`);
    return e;
  }
  check(false, `${what}: no error`);
}

// Chat, plain and streamed.
let lastId;
for (const model of ["openai/gpt", "google/gemini-flash"]) {
  const r = await client.chat.send({
    chatRequest: { model, messages: USER, reasoning: { effort: "low" }, sessionId: "s-1", provider: { sort: "price" } },
  });
  check(r.choices[0].message.content === TIDES, `${model}: ${JSON.stringify(r.choices[0])}`);
  check(r.model === model && r.id.startsWith("gen-"), `${model}: ${r.model} ${r.id}`);
  check(r.usage.cost > 0, `${model}: usage ${JSON.stringify(r.usage)}`);
  lastId = r.id;
  const stream = await client.chat.send({ chatRequest: { model, messages: USER, stream: true } });
  let text = "";
  let last;
  for await (const chunk of stream) {
    text += chunk.choices[0]?.delta?.content ?? "";
    last = chunk;
  }
  check(text === TIDES, `${model}: streamed ${JSON.stringify(text)}`);
  check(last.choices.length === 0 && last.usage.cost > 0, `${model}: usage chunk ${JSON.stringify(last)}`);
}

// Reasoning with its signature, from Anthropic's thinking.
const thinking = await client.chat.send({
  chatRequest: { model: "anthropic/thinking", messages: USER, stream: true, reasoning: { maxTokens: 2048 } },
});
let reasoning = "";
let signed = false;
for await (const chunk of thinking) {
  reasoning += chunk.choices[0]?.delta?.reasoning ?? "";
  for (const d of chunk.choices[0]?.delta?.reasoningDetails ?? []) signed ||= Boolean(d.signature);
}
check(reasoning && signed, `reasoning ${JSON.stringify(reasoning)} signed ${signed}`);

// Errors carry OpenRouter's status.
await rejects(() => client.chat.send({ chatRequest: { model: "nope/model", messages: USER } }), 404, "unknown model");
await rejects(() => client.chat.send({ chatRequest: { model: "openai/gpt:online", messages: USER } }), 400, ":online");

// The catalog.
const page = await client.models.list();
check(page.result.totalCount === 7, `models: ${page.result.totalCount}`);
const gpt = page.result.data.find((m) => m.id === "openai/gpt");
check(gpt.canonicalSlug === "openai/gpt" && gpt.architecture.tokenizer === "GPT", `model ${JSON.stringify(gpt)}`);
check((await client.models.count()).data.count === 7, "count");
const eps = await client.endpoints.list({ author: "openai", slug: "gpt" });
check(eps.data.endpoints[0].providerName === "oai" && eps.data.endpoints[0].uptimeLast30m === 100, `endpoints ${JSON.stringify(eps.data.endpoints[0])}`);
const providers = await client.providers.list();
check(providers.data.length === 3, `providers ${JSON.stringify(providers)}`);

// Embeddings.
const e = await client.embeddings.generate({ requestBody: { model: "openai/embed", input: "a" } });
check(e.model === "openai/embed" && e.data[0].embedding.length === 3 && e.usage.cost > 0, `embeddings ${JSON.stringify(e)}`);

// The generation and the key.
const g = (await client.generations.getGeneration({ id: lastId })).data;
check(g.id === lastId && g.totalCost > 0 && g.providerName === "gem" && g.httpReferer === "https://app.example", `generation ${JSON.stringify(g)}`);
const me = (await client.apiKeys.getCurrentKeyMetadata()).data;
check(me.usage > 0 && me.rateLimit.requests === 600, `key ${JSON.stringify(me)}`);

// Key management and credits with the admin key.
const made = await admin.apiKeys.create({ requestBody: { name: "ts-made", limit: 2, includeByokInLimit: false } });
check(made.key.startsWith("sk-mg-") && made.data.limit === 2, `created ${JSON.stringify(made.data)}`);
const hash = made.data.hash;
check((await admin.apiKeys.list()).data.some((k) => k.hash === hash), "listed");
const upd = await admin.apiKeys.update({ hash, requestBody: { name: "ts-renamed", disabled: true } });
check(upd.data.name === "ts-renamed" && upd.data.disabled, `updated ${JSON.stringify(upd.data)}`);
check((await admin.apiKeys.list({ includeDisabled: true })).data.some((k) => k.hash === hash), "listed when disabled");
check((await admin.apiKeys.get({ hash })).data.name === "ts-renamed", "get");
check((await admin.apiKeys.delete({ hash })).deleted === true, "deleted");
await rejects(() => admin.apiKeys.get({ hash }), 404, "a deleted key");
const credits = (await admin.credits.getCredits()).data;
check(credits.totalCredits === 100 && credits.totalUsage > 0, `credits ${JSON.stringify(credits)}`);

console.log("all checks passed");
