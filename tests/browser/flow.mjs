// The website as a person uses it, in Chromium: home → catalog → live search → capability
// filter → a model page → Chinese → a code sample's tab and copy button (clipboard read back);
// plus the catalog's filters without JavaScript and the language from Accept-Language.
// Each step is screenshotted into the artifacts folder; the last stdout line is a JSON summary.
//
//   node tests/browser/flow.mjs --base http://127.0.0.1:8000 [--out DIR] [--config FILE.json]
//
// The config file (written by tests/e2e/test_web_browser.py) may override DEFAULTS below.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { artifactsDir, emit, launch, log, parseArgs, waitFor } from "./lib.mjs";

const DEFAULTS = {
  publicUrl: null, // default: --base
  allIds: [
    "local/smollm2-135m-instruct",
    "qwen/qwen3-coder",
    "qwen/qwen3-8b",
    "qwen/qwen3-30b-a3b",
    "qwen/qwen3-235b-a22b",
    "qwen/qwen3-235b-a22b-thinking-2507",
  ],
  search: { query: "coder", visible: ["qwen/qwen3-coder"] },
  thinking: {
    visible: [
      "qwen/qwen3-8b",
      "qwen/qwen3-30b-a3b",
      "qwen/qwen3-235b-a22b",
      "qwen/qwen3-235b-a22b-thinking-2507",
    ],
  },
  model: { id: "qwen/qwen3-8b", name: "Qwen3 8B" },
  sample: "python-openai",
  sampleKeys: [
    "curl", "python-requests", "python-openai", "node-axios", "go", "rust", "java-okhttp",
    "csharp-httpclient", "csharp-restsharp", "php-guzzle", "php-curl", "ruby", "swift", "dart",
    "c-libcurl",
  ],
  copied: { en: "Copied", "zh-CN": "已复制" },
};

const args = parseArgs();
if (!args.base) throw new Error("--base URL is required");
const base = String(args.base).replace(/\/$/, "");
const config = { ...DEFAULTS, ...(args.config ? JSON.parse(readFileSync(args.config, "utf8")) : {}) };
const publicUrl = (config.publicUrl || base).replace(/\/$/, "");
const out = artifactsDir(args);
const modelPath = `/models/${config.model.id}`;

const steps = [];
const pageErrors = [];
const badResponses = [];
const started = Date.now();

function check(condition, message) {
  if (!condition) throw new Error(message);
}

function sameSet(a, b) {
  const sa = [...new Set(a)].sort();
  const sb = [...new Set(b)].sort();
  return sa.length === sb.length && sa.every((v, i) => v === sb[i]);
}

/** Records page errors, console errors and failing same-origin responses of a page. */
function watch(page, label) {
  page.on("pageerror", (error) => pageErrors.push({ page: label, url: page.url(), error: String(error) }));
  page.on("console", (message) => {
    if (message.type() === "error") {
      const source = message.location()?.url || null;
      pageErrors.push({ page: label, url: page.url(), console: message.text(), source });
    }
  });
  page.on("response", (response) => {
    const url = response.url();
    if (url.startsWith(base) && response.status() >= 400) {
      badResponses.push({ page: label, url, status: response.status() });
    }
  });
  return page;
}

async function step(name, page, fn, { fullPage = true } = {}) {
  const t0 = Date.now();
  const record = { name, ok: false };
  try {
    const detail = await fn();
    record.ok = true;
    if (detail !== undefined) record.detail = detail;
  } catch (error) {
    record.error = String(error?.message || error).split("\n").slice(0, 12).join("\n");
  }
  record.url = page.url();
  const file = join(out, `flow-${String(steps.length + 1).padStart(2, "0")}-${name}.png`);
  try {
    await page.screenshot({ path: file, fullPage, timeout: 10_000 });
    record.screenshot = file;
  } catch (error) {
    record.screenshot_error = String(error?.message || error);
  }
  record.ms = Date.now() - t0;
  steps.push(record);
  log(`[flow] ${record.ok ? "ok  " : "FAIL"} ${name} (${record.ms} ms)${record.ok ? "" : ": " + record.error}`);
  return record.ok;
}

async function goto(page, path) {
  const response = await page.goto(base + path, { waitUntil: "load" });
  check(response, `no response for ${path}`);
  check(response.status() === 200, `GET ${path} answered ${response.status()}`);
  return response;
}

function pathname(page) {
  return new URL(page.url()).pathname;
}

async function cards(page) {
  return page.evaluate(() =>
    [...document.querySelectorAll("li.model-card")].map((el) => ({
      id: el.dataset.id,
      visible: !el.hidden && el.checkVisibility(),
    })),
  );
}

async function visibleIds(page) {
  return (await cards(page)).filter((c) => c.visible).map((c) => c.id);
}

async function waitVisible(page, expected, timeoutMs = 5000) {
  const result = await waitFor(async () => {
    const visible = await visibleIds(page);
    return { ok: sameSet(visible, expected), visible };
  }, timeoutMs);
  check(
    result.ok,
    `visible cards ${JSON.stringify(result.visible ?? result.error)}, expected ${JSON.stringify(expected)}`,
  );
  return result.visible;
}

async function htmlLang(page) {
  return page.evaluate(() => document.documentElement.getAttribute("lang"));
}

async function waitLang(page, expected, timeoutMs = 5000) {
  const result = await waitFor(async () => {
    const lang = await htmlLang(page);
    return { ok: lang === expected, lang };
  }, timeoutMs);
  check(result.ok, `<html lang> is ${JSON.stringify(result.lang ?? result.error)}, expected ${expected}`);
}

const browser = await launch();
let summary;
try {
  const context = await browser.newContext({
    locale: "en-US",
    viewport: { width: 1280, height: 900 },
  });
  await context.grantPermissions(["clipboard-read", "clipboard-write"], { origin: base });
  const page = watch(await context.newPage(), "flow");
  page.setDefaultTimeout(10_000);

  await step("home", page, async () => {
    await goto(page, "/");
    const h1 = await page.locator("h1").count();
    check(h1 === 1, `${h1} <h1> elements, expected 1`);
    const codes = await page.locator("code").allTextContents();
    for (const url of [`${publicUrl}/api/gpt/v1`, `${publicUrl}/api/anthropic`]) {
      check(
        codes.some((text) => text.trim() === url),
        `no <code> holding ${url} (codes: ${JSON.stringify(codes.slice(0, 10))})`,
      );
    }
    const link = page.locator('a[href="/models"]').filter({ visible: true }).first();
    check((await link.count()) === 1, 'no visible <a href="/models">');
    await Promise.all([page.waitForURL((url) => url.pathname === "/models"), link.click()]);
    return { codes: codes.filter((text) => text.includes("/api/")) };
  });

  await step("catalog", page, async () => {
    if (pathname(page) !== "/models") await goto(page, "/models");
    const all = await cards(page);
    const ids = all.map((c) => c.id);
    for (const id of config.allIds) {
      check(ids.includes(id), `no li.model-card[data-id="${id}"] (cards: ${JSON.stringify(ids)})`);
      const link = page.locator(`li.model-card[data-id="${id}"] a[href="/models/${id}"]`);
      check((await link.count()) >= 1, `card ${id} has no <a href="/models/${id}">`);
    }
    const hidden = all.filter((c) => !c.visible).map((c) => c.id);
    check(hidden.length === 0, `cards hidden with no filter: ${JSON.stringify(hidden)}`);
    for (const selector of [
      'input#q[type="search"][name="q"]',
      'form#filters[method="get"][action="/models"]',
      'form#filters select[name="family"]',
      'form#filters select[name="sort"]',
      'form#filters input[type="checkbox"][name="anthropic"][value="1"]',
    ]) {
      check((await page.locator(selector).count()) === 1, `no ${selector}`);
    }
    for (const cap of ["text", "thinking", "code", "tools", "structured_output"]) {
      const selector = `form#filters input[type="checkbox"][name="cap"][value="${cap}"]`;
      check((await page.locator(selector).count()) === 1, `no ${selector}`);
    }
    const sorts = await page.locator('form#filters select[name="sort"] option').evaluateAll(
      (options) => options.map((o) => o.value),
    );
    for (const sort of ["popular", "newest", "price", "context"]) {
      check(sorts.includes(sort), `sort has no option ${sort} (has ${JSON.stringify(sorts)})`);
    }
    return { cards: ids };
  });

  await step("search", page, async () => {
    if (pathname(page) !== "/models") await goto(page, "/models");
    const q = page.locator("#q");
    await q.click();
    await q.pressSequentially(config.search.query, { delay: 40 });
    const visible = await waitVisible(page, config.search.visible);
    const urlAfterTyping = page.url();
    await page.locator("#q").fill("");
    await waitVisible(page, config.allIds);
    return { visible, urlAfterTyping };
  });

  await step("filter-thinking", page, async () => {
    if (pathname(page) !== "/models") await goto(page, "/models");
    await page.locator('form#filters input[type="checkbox"][name="cap"][value="thinking"]').check();
    const visible = await waitVisible(page, config.thinking.visible);
    return { visible, url: page.url() };
  });

  await step("model-page", page, async () => {
    const id = config.model.id;
    if (pathname(page) === "/models") {
      const link = page.locator(`li.model-card[data-id="${id}"] a[href="/models/${id}"]`).first();
      await Promise.all([page.waitForURL((url) => url.pathname === modelPath), link.click()]);
    } else {
      await goto(page, modelPath);
    }
    check(pathname(page) === modelPath, `at ${page.url()}, expected ${modelPath}`);
    const lang = await htmlLang(page);
    check(lang === "en", `<html lang> is ${JSON.stringify(lang)} with Accept-Language en-US`);
    const h1 = await page.locator("h1").allTextContents();
    check(h1.length === 1, `${h1.length} <h1> elements, expected 1`);
    check(h1[0].includes(config.model.name), `<h1> ${JSON.stringify(h1[0])} lacks ${config.model.name}`);
    const modelId = await page.locator("code#model-id").allTextContents();
    check(
      modelId.length === 1 && modelId[0].trim() === id,
      `code#model-id holds ${JSON.stringify(modelId)}, expected ${id}`,
    );
    const rows = await page.locator("table#params tr").count();
    check(rows > 1, `table#params has ${rows} rows`);
    return { h1: h1[0], paramRows: rows };
  });

  await step("language-zh", page, async () => {
    if (pathname(page) !== modelPath) await goto(page, modelPath);
    const zh = page.locator('a.lang-switch[hreflang="zh"]');
    check((await zh.count()) >= 1, 'no <a class="lang-switch" hreflang="zh">');
    const href = await zh.first().getAttribute("href");
    await Promise.all([page.waitForLoadState("load"), zh.first().click()]);
    await waitLang(page, "zh-CN");
    const urlAfterSwitch = page.url();
    const cookie = (await context.cookies(base)).find((c) => c.name === "lang");
    check(cookie, 'no cookie "lang" after switching to Chinese');
    // Remembered: the next load, with no ?lang and Accept-Language still en-US.
    await goto(page, modelPath);
    await waitLang(page, "zh-CN", 1000);
    const en = page.locator('a.lang-switch[hreflang="en"]');
    check((await en.count()) >= 1, 'no <a class="lang-switch" hreflang="en"> on the Chinese page');
    return { href, urlAfterSwitch, cookie: { value: cookie.value, path: cookie.path } };
  });

  await step("sample-tabs", page, async () => {
    if (pathname(page) !== modelPath) await goto(page, modelPath);
    const key = config.sample;
    const tabs = await page.locator('#sample-tabs[role="tablist"] [role="tab"]').evaluateAll((els) =>
      els.map((el) => ({
        key: el.dataset.sample,
        tag: el.tagName.toLowerCase(),
        selected: el.getAttribute("aria-selected"),
        controls: el.getAttribute("aria-controls"),
      })),
    );
    const keys = tabs.map((t) => t.key);
    const problems = [];
    for (const k of config.sampleKeys) {
      const tab = tabs.find((t) => t.key === k);
      if (!tab) {
        problems.push(`no tab data-sample="${k}"`);
        continue;
      }
      if (tab.tag !== "button") problems.push(`tab ${k} is a <${tab.tag}>`);
      if (tab.controls !== `panel-${k}`) problems.push(`tab ${k} aria-controls=${tab.controls}`);
      const panel = await page.locator(`#panel-${k}`).evaluateAll((els) =>
        els.map((el) => ({
          role: el.getAttribute("role"),
          code: el.querySelector(`pre > code[id="sample-${el.id.slice(6)}"]`)?.textContent ?? null,
          copy: !!el.querySelector(`button.copy[data-copy-target="sample-${el.id.slice(6)}"]`),
        })),
      );
      if (panel.length !== 1) {
        problems.push(`${panel.length} elements #panel-${k}`);
        continue;
      }
      if (panel[0].role !== "tabpanel") problems.push(`#panel-${k} role=${panel[0].role}`);
      if (panel[0].code === null) problems.push(`#panel-${k} has no <pre><code id="sample-${k}">`);
      else {
        if (!panel[0].code.includes("API_KEY")) problems.push(`sample ${k} lacks API_KEY`);
        if (!panel[0].code.includes(config.model.id)) problems.push(`sample ${k} lacks ${config.model.id}`);
      }
      if (!panel[0].copy) problems.push(`#panel-${k} has no button.copy[data-copy-target="sample-${k}"]`);
    }
    const selected = tabs.filter((t) => t.selected === "true").map((t) => t.key);
    if (selected.length !== 1) problems.push(`${selected.length} tabs aria-selected="true": ${selected}`);
    check(problems.length === 0, problems.join("; "));

    await page.locator(`#sample-tabs [role="tab"][data-sample="${key}"]`).click();
    const state = await waitFor(async () => {
      const now = await page.evaluate(() =>
        [...document.querySelectorAll('#sample-tabs [role="tab"]')].map((el) => {
          const panel = document.getElementById(el.getAttribute("aria-controls"));
          return {
            key: el.dataset.sample,
            selected: el.getAttribute("aria-selected"),
            panelVisible: !!panel && panel.checkVisibility(),
          };
        }),
      );
      const bad = now.filter((t) =>
        t.key === key
          ? t.selected !== "true" || !t.panelVisible
          : t.selected !== "false" || t.panelVisible,
      );
      return { ok: bad.length === 0, bad };
    });
    check(state.ok, `after clicking tab ${key}: ${JSON.stringify(state.bad ?? state.error)}`);
    return { tabs: keys, initiallySelected: selected[0] };
  }, { fullPage: false });

  await step("copy", page, async () => {
    if (pathname(page) !== modelPath) await goto(page, modelPath);
    const key = config.sample;
    const tab = page.locator(`#sample-tabs [role="tab"][data-sample="${key}"]`);
    if ((await tab.getAttribute("aria-selected")) !== "true") await tab.click();
    const lang = await htmlLang(page);
    const expectedLabel = config.copied[lang];
    check(expectedLabel, `no expected "copied" label for lang ${lang}`);
    // Something else on the clipboard first, so that a copy that does nothing is seen.
    await page.evaluate(() => navigator.clipboard.writeText("(clipboard before copy)"));
    const button = page.locator(`#panel-${key} button.copy[data-copy-target="sample-${key}"]`);
    const live = await button.evaluate(
      (el) =>
        el.getAttribute("aria-live") ||
        el.querySelector("[aria-live]")?.getAttribute("aria-live") ||
        null,
    );
    await button.click();
    const label = await waitFor(async () => {
      const text = (await button.textContent()) ?? "";
      return { ok: text.includes(expectedLabel), text };
    });
    const clipboard = await page.evaluate(() => navigator.clipboard.readText());
    const text = await page.locator(`#sample-${key}`).textContent();
    const problems = [];
    if (!label.ok) problems.push(`button shows ${JSON.stringify(label.text)}, expected ${expectedLabel}`);
    if (!live) problems.push("no aria-live on the copy button or inside it");
    if (clipboard !== text) {
      problems.push(
        clipboard.trim() === text.trim()
          ? "clipboard equals the sample only after trimming whitespace"
          : `clipboard (${clipboard.length} chars) differs from #sample-${key} (${text.length} chars): ` +
              JSON.stringify(clipboard.slice(0, 120)),
      );
    }
    if (!clipboard.includes("API_KEY")) problems.push("clipboard lacks API_KEY");
    if (!clipboard.includes(config.model.id)) problems.push(`clipboard lacks ${config.model.id}`);
    check(problems.length === 0, problems.join("; "));
    return { label: label.text.trim(), ariaLive: live, chars: clipboard.length };
  }, { fullPage: false });

  await step("language-en", page, async () => {
    if (pathname(page) !== modelPath) await goto(page, modelPath);
    const en = page.locator('a.lang-switch[hreflang="en"]');
    check((await en.count()) >= 1, 'no <a class="lang-switch" hreflang="en">');
    await Promise.all([page.waitForLoadState("load"), en.first().click()]);
    await waitLang(page, "en");
    await goto(page, modelPath);
    await waitLang(page, "en", 1000);
    const cookie = (await context.cookies(base)).find((c) => c.name === "lang");
    return { cookie: cookie?.value ?? null };
  });

  // A new visitor whose browser asks for Chinese first gets Chinese, with no cookie or ?lang.
  const zhContext = await browser.newContext({ locale: "zh-CN", viewport: { width: 1280, height: 900 } });
  const zhPage = watch(await zhContext.newPage(), "accept-language");
  await step("accept-language-zh", zhPage, async () => {
    await goto(zhPage, "/models");
    await waitLang(zhPage, "zh-CN", 1000);
    const headers = await zhPage.evaluate(() => navigator.languages);
    return { languages: headers };
  });
  await zhContext.close();

  // Without JavaScript: the filter form is submitted and the server filters.
  const noJs = await browser.newContext({
    javaScriptEnabled: false,
    locale: "en-US",
    viewport: { width: 1280, height: 900 },
  });
  const noJsPage = watch(await noJs.newPage(), "no-js");
  noJsPage.setDefaultTimeout(10_000);
  await step("no-js-filter", noJsPage, async () => {
    await goto(noJsPage, "/models");
    await noJsPage.locator('form#filters input[type="checkbox"][name="cap"][value="thinking"]').check();
    const submit = noJsPage.locator(
      'form#filters button:not([type="button"]):not([type="reset"]), form#filters input[type="submit"], button[form="filters"][type="submit"]',
    );
    check((await submit.count()) >= 1, "form#filters has no submit button: it cannot be submitted without JavaScript");
    await Promise.all([
      noJsPage.waitForURL((url) => url.searchParams.getAll("cap").includes("thinking")),
      submit.first().click(),
    ]);
    const visible = await waitVisible(noJsPage, config.thinking.visible, 1000);
    const checked = await noJsPage
      .locator('form#filters input[type="checkbox"][name="cap"][value="thinking"]')
      .isChecked();
    check(checked, "the thinking checkbox is not checked on the filtered page");
    return { url: noJsPage.url(), visible };
  });
  await step("no-js-search", noJsPage, async () => {
    await goto(noJsPage, `/models?q=${encodeURIComponent(config.search.query)}`);
    const visible = await waitVisible(noJsPage, config.search.visible, 1000);
    const value = await noJsPage.locator("#q").inputValue();
    check(value === config.search.query, `#q holds ${JSON.stringify(value)} after ?q=`);
    return { visible };
  });
  await noJs.close();
  await context.close();
} finally {
  const errors = pageErrors.length + badResponses.length;
  summary = {
    ok: steps.length > 0 && steps.every((s) => s.ok),
    steps,
    page_errors: pageErrors,
    bad_responses: badResponses,
    artifacts: out,
    ms: Date.now() - started,
  };
  if (errors) log(`[flow] ${pageErrors.length} page errors, ${badResponses.length} failing responses`);
  await browser.close();
  emit(summary);
}
