// The console as a person uses it, in Chromium, in two phases around an API call made by the
// test with the OpenAI SDK:
//   phase 1: sign up → the dashboard → create a key (shown once; copied to the clipboard and
//            read back) → saves the browser's cookies to --state;
//   phase 2: (same cookies) the playground streams an answer from the API with the key →
//            the usage page's chart and tables show the calls → log out.
// Each step is screenshotted; the last stdout line is a JSON summary.
//
//   node tests/browser/console.mjs --base URL --phase 1|2 --state FILE [--out DIR]
//        [--user NAME] [--key SECRET] [--model ID] [--message TEXT] [--max-tokens N] [--balance CNY --code CODE]
import { existsSync } from "node:fs";
import { join } from "node:path";
import { artifactsDir, emit, launch, parseArgs, waitFor } from "./lib.mjs";

const args = parseArgs();
const base = String(args.base).replace(/\/$/, "");
const out = artifactsDir(args);
const phase = String(args.phase || "1");
const user = String(args.user || "playwright");
const model = String(args.model || "local/smollm2-135m-instruct");
const message = String(args.message || "Say hi");
const maxTokens = String(args["max-tokens"] || "8");
const steps = [];
const pageErrors = [];

function check(condition, message) {
  if (!condition) throw new Error(message);
}

async function step(page, name, run) {
  const record = { name, ok: false };
  steps.push(record);
  try {
    Object.assign(record, (await run()) || {});
    record.ok = true;
  } catch (error) {
    record.error = String(error?.message || error);
  }
  const file = join(out, `console-${phase}-${String(steps.length).padStart(2, "0")}-${name}.png`);
  await page.screenshot({ path: file, fullPage: true, timeout: 10_000 }).catch(() => {});
  record.screenshot = file;
  return record.ok;
}

const browser = await launch();
const summary = { phase, steps, pageErrors };
try {
  const context = await browser.newContext({
    viewport: { width: 1280, height: 900 },
    ...(phase === "2" && existsSync(args.state) ? { storageState: args.state } : {}),
  });
  await context.grantPermissions(["clipboard-read", "clipboard-write"], { origin: base });
  const page = await context.newPage();
  page.on("pageerror", (error) => pageErrors.push(String(error)));
  if (phase === "1") {
    (await step(page, "signup", async () => {
      await page.goto(`${base}/get-apikey`);
      await page.click('a[href="/console/signup"]');
      await page.fill("#username", user);
      await page.fill("#password", "correct horse battery");
      await Promise.all([page.waitForURL(`${base}/console`), page.click('#signup-form button[type="submit"]')]);
      const balance = await page.textContent("#balance");
      return { balance };
    })) &&
    (await step(page, "create-key", async () => {
      await page.goto(`${base}/get-apikey`);  // a logged-in user goes straight to the keys
      check(page.url() === `${base}/console/keys`, `landed on ${page.url()}`);
      await page.fill("#key-name", "browser");
      await Promise.all([page.waitForLoadState("load"), page.click('#create-key button[type="submit"]')]);
      await page.waitForSelector("#new-key-secret");
      const secret = (await page.textContent("#new-key-secret")).trim();
      check(secret.startsWith("sk-mp-"), `secret ${secret}`);
      await page.click('button[data-copy-target="new-key-secret"]');
      const clipboard = await page.evaluate(() => navigator.clipboard.readText());
      check(clipboard === secret, "the clipboard does not hold the key");
      summary.secret = secret;
      return { copied: true };
    }));
    await context.storageState({ path: args.state });
  } else {
    (await step(page, "playground", async () => {
      await page.goto(`${base}/console/playground`);
      await page.fill("#pg-key", String(args.key));
      await page.selectOption("#pg-model", model);
      await page.fill("#pg-message", message);
      await page.click("#playground details summary");
      await page.fill("#pg-max_tokens", maxTokens);
      await page.click("#pg-send");
      const done = await waitFor(async () => {
        const usage = (await page.textContent("#pg-usage")) || "";
        const answer = (await page.textContent("#pg-answer")) || "";
        const reasoning = (await page.textContent("#pg-reasoning")) || "";
        return { ok: usage.includes("tokens"), usage, answer, reasoning };
      }, 60_000, 200);
      check(done.ok, `no usage shown: ${JSON.stringify(done)}`);
      check(done.answer.trim().length > 0, "no answer streamed");
      check(page.url() === `${base}/console/playground`, "the form was posted, not streamed");
      return { usage: done.usage, answer: done.answer, reasoning: done.reasoning };
    })) &&
    (await step(page, "usage", async () => {
      const seen = await waitFor(async () => {
        await page.goto(`${base}/console/usage?days=7`);
        const bars = await page.locator("#spend-chart rect").count();
        const row = await page.locator("#usage-by-model tbody tr").first().textContent().catch(() => "");
        return { ok: bars === 7 && (row || "").includes(model), bars, row };
      }, 10_000, 500);
      check(seen.ok, `usage page: ${JSON.stringify(seen)}`);
      return { row: seen.row };
    })) &&
    (!args.code || await step(page, "billing", async () => {
      // An admin topped this user up meanwhile (the test, over HTTP): the page shows it; then
      // a top-up code is redeemed, and a second try with the same code is refused.
      await page.goto(`${base}/console/billing`);
      const before = (await page.textContent("#balance")).trim();
      check(!args.balance || before === `¥${args.balance}`, `balance ${before}`);
      await page.fill("#code", String(args.code));
      await Promise.all([page.waitForLoadState("load"), page.click('#redeem button[type="submit"]')]);
      await page.waitForSelector("#redeemed");
      const after = (await page.textContent("#balance")).trim();
      await page.fill("#code", String(args.code));
      await Promise.all([page.waitForLoadState("load"), page.click('#redeem button[type="submit"]')]);
      const refused = (await page.textContent("#form-error")) || "";
      check(refused.includes("not valid"), `second redemption: ${refused}`);
      return { before, after };
    })) &&
    (await step(page, "logout", async () => {
      await Promise.all([page.waitForURL(`${base}/`), page.click("#logout")]);
      await page.goto(`${base}/console`);
      check(page.url().startsWith(`${base}/console/login`), `after log-out: ${page.url()}`);
      return {};
    }));
  }
} finally {
  await browser.close();
}
summary.ok = steps.every((s) => s.ok) && pageErrors.length === 0;
emit(summary);
