// The AI SDK's default OpenAI provider (`openai(id)`: the Responses API) against modelport:
// generateText, streamText, and a tool round trip. Prints one JSON line.
//   node run.mjs --base URL --key KEY --model ID --tool-model ID
import { createOpenAI } from "@ai-sdk/openai";
import { generateText, streamText, tool, stepCountIs } from "ai";
import { z } from "zod";

const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, value, index, all) => {
    if (value.startsWith("--")) pairs.push([value.slice(2), all[index + 1]]);
    return pairs;
  }, []),
);
const openai = createOpenAI({ baseURL: `${args.base}/v1`, apiKey: args.key });
const out = {};
const generated = await generateText({ model: openai(args.model), prompt: "GREET me" });
out.generate = { text: generated.text, usage: generated.usage };
const streamed = streamText({ model: openai(args.model), prompt: "GREET me" });
let text = "";
for await (const piece of streamed.textStream) text += piece;
out.stream = { text };
const calls = [];
const withTool = await generateText({
  model: openai(args["tool-model"]),
  prompt: "WEATHER in Hangzhou?",
  tools: {
    get_weather: tool({
      description: "The weather in a city.",
      inputSchema: z.object({ city: z.string() }),
      execute: async ({ city }) => {
        calls.push(city);
        return `sunny in ${city}`;
      },
    }),
  },
  stopWhen: stepCountIs(3),
});
out.tool = { calls, text: withTool.text, steps: withTool.steps.length };
process.stdout.write(JSON.stringify(out) + "\n");
