// Drives the gateway's Responses API with the Vercel AI SDK's default OpenAI provider
// (`openai(model)` speaks `POST /v1/responses`): generateText, streamText, and a tool call.
//
// Usage: node ai_sdk.mjs BASE_URL KEY   (BASE_URL like http://127.0.0.1:PORT/v1), run with
// NODE_PATH at the packages (scripts/test.sh installs them into .tools/ai-sdk). Exits non-zero
// with a message on the first failed check.
import { createRequire } from "node:module";
import path from "node:path";

const require = createRequire(path.join(process.env.AI_SDK_DIR, "package.json"));
const { generateText, streamText, tool, jsonSchema, stepCountIs } = await import(require.resolve("ai"));
const { createOpenAI } = await import(require.resolve("@ai-sdk/openai"));

const [baseURL, apiKey] = process.argv.slice(2);
const openai = createOpenAI({ baseURL, apiKey });
const TIDES = "Tides come mostly from the Moon's pull on the oceans.";

function check(cond, what) {
  if (!cond) {
    console.error(`FAILED: ${what}`);
    process.exit(1);
  }
}

for (const model of ["openai/gpt", "anthropic/claude", "gemini/flash"]) {
  const g = await generateText({ model: openai(model), prompt: "Why are there tides?", maxRetries: 0 });
  if (model !== "anthropic/claude") check(g.text === TIDES, `${model}: generateText ${JSON.stringify(g.text)}`);
  check(g.usage.inputTokens > 0, `${model}: usage ${JSON.stringify(g.usage)}`);
  check(g.response.modelId === model, `${model}: model ${g.response.modelId}`);

  const s = streamText({ model: openai(model), prompt: "Why are there tides?", maxRetries: 0 });
  let text = "";
  for await (const part of s.textStream) text += part;
  check(text === TIDES, `${model}: streamText ${JSON.stringify(text)}`);
  check((await s.finishReason) === "stop", `${model}: finish ${await s.finishReason}`);
}

// A tool call: the provider asks, the SDK runs it.
let ran = null;
const t = await generateText({
  model: openai("openai/tool"),
  prompt: "Weather in Lyon?",
  maxRetries: 0,
  tools: {
    get_weather: tool({
      description: "Weather",
      inputSchema: jsonSchema({ type: "object", properties: { city: { type: "string" }, unit: { type: "string" } } }),
      execute: async (input) => {
        ran = input;
        return "21 C";
      },
    }),
  },
  stopWhen: stepCountIs(1),
});
check(ran && ran.city === "Lyon", `the tool ran with ${JSON.stringify(ran)}`);
check(t.toolCalls.length >= 1 && t.toolCalls[0].toolName === "get_weather", `tool calls ${JSON.stringify(t.toolCalls)}`);

// Errors surface as the SDK's API errors.
try {
  await generateText({ model: openai("nope/none"), prompt: "hi", maxRetries: 0 });
  check(false, "an unknown model is refused");
} catch (e) {
  check(e.statusCode === 404, `404: ${e}`);
}

console.log("all checks passed");
