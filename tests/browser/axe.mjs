// axe-core (node_modules/axe-core/axe.min.js, injected by Playwright) on each page, in the
// language asked for, and a scan of the rendered page for leaked template output; a full-page
// screenshot of each. The last stdout line is JSON:
// { pages: [{ path, lang, url, status, htmlLang, violations: [{ id, impact, help, nodes }],
//   leaks: [{ in, text }] }] } where leaks are template or script output that went wrong.
//
//   node tests/browser/axe.mjs --base http://127.0.0.1:8000 [--out DIR] \
//       [--pages "/:en,/:zh,/models:en"]
import { join } from "node:path";
import { artifactsDir, emit, launch, log, parseArgs, require } from "./lib.mjs";

const DEFAULT_PAGES = [
  "/",
  "/models",
  "/models/qwen/qwen3-8b",
  "/get-apikey",
].flatMap((path) => [`${path}:en`, `${path}:zh`]);

const args = parseArgs();
if (!args.base) throw new Error("--base URL is required");
const base = String(args.base).replace(/\/$/, "");
const out = artifactsDir(args);
const pages = (args.pages ? String(args.pages).split(",") : DEFAULT_PAGES).map((spec) => {
  const at = spec.lastIndexOf(":");
  return { path: spec.slice(0, at), lang: spec.slice(at + 1) };
});
const axePath = require.resolve("axe-core/axe.min.js");
const LOCALES = { en: "en-US", zh: "zh-CN" };

/** Runs in the page: text that a template or a script leaked ("<built-in method copy of dict
 * object at 0x…>", "{{ … }}", "undefined", "[object Object]") and copy buttons whose target is
 * missing. Code samples may hold braces and "undefined" legitimately: only the Python and
 * object-address patterns apply inside <pre>/<code>. */
function findLeaks() {
  const anywhere = /<(built-in|bound) method|object at 0x[0-9a-f]{6,}|\bjinja2\b|Traceback \(most recent/;
  const prose = /\{\{-?\s*[\w.|() ]+-?\}\}|\{%.*?%\}|\bundefined\b|\bNaN\b|\[object Object\]|\bNone\b/;
  const found = [];
  const where = (el) =>
    el.tagName.toLowerCase() + (el.id ? `#${el.id}` : "") +
    (el.classList.length ? "." + [...el.classList].join(".") : "");
  const snippet = (text, match) => {
    const at = Math.max(0, match.index - 40);
    return text.slice(at, match.index + match[0].length + 40).replace(/\s+/g, " ");
  };
  const walker = document.createTreeWalker(document.documentElement, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const parent = node.parentElement;
    if (!parent || parent.closest("script, style")) continue;
    const inCode = !!parent.closest("pre, code");
    const match = node.textContent.match(anywhere) || (!inCode && node.textContent.match(prose));
    if (match) found.push({ in: where(parent), text: snippet(node.textContent, match) });
  }
  for (const el of document.querySelectorAll("*")) {
    for (const { name, value } of el.attributes) {
      const match = value.match(anywhere) || (name !== "style" && value.match(prose));
      if (match) found.push({ in: `${where(el)}[${name}]`, text: snippet(value, match) });
    }
  }
  for (const button of document.querySelectorAll("button.copy")) {
    const target = button.getAttribute("data-copy-target");
    if (!target || !document.getElementById(target)) {
      found.push({ in: where(button), text: `data-copy-target=${JSON.stringify(target)} names no element` });
    }
  }
  const counted = new Map();
  for (const leak of found) {
    const key = `${leak.in}\u0000${leak.text}`;
    counted.set(key, { ...leak, count: (counted.get(key)?.count ?? 0) + 1 });
  }
  return [...counted.values()].slice(0, 30);
}

function slug(path, lang) {
  const name = path.replace(/^\/+|\/+$/g, "").replace(/[^A-Za-z0-9.-]+/g, "_") || "home";
  return `axe-${name}-${lang}.png`;
}

const started = Date.now();
const results = [];
const browser = await launch();
try {
  for (const { path, lang } of pages) {
    const t0 = Date.now();
    const result = { path, lang };
    const context = await browser.newContext({
      locale: LOCALES[lang] ?? lang,
      // The pages' Content-Security-Policy would block the injected axe script.
      bypassCSP: true,
      viewport: { width: 1280, height: 900 },
    });
    try {
      const page = await context.newPage();
      const url = `${base}${path}${path.includes("?") ? "&" : "?"}lang=${lang}`;
      result.url = url;
      const response = await page.goto(url, { waitUntil: "load" });
      result.status = response?.status() ?? null;
      result.htmlLang = await page.evaluate(() => document.documentElement.getAttribute("lang"));
      await page.addScriptTag({ path: axePath });
      const axe = await page.evaluate(async () => {
        const r = await window.axe.run(document, { resultTypes: ["violations"] });
        return { version: r.testEngine?.version, violations: r.violations };
      });
      result.axeVersion = axe.version;
      result.leaks = await page.evaluate(findLeaks);
      result.violations = axe.violations.map((v) => ({
        id: v.id,
        impact: v.impact,
        help: v.help,
        helpUrl: v.helpUrl,
        nodes: v.nodes.slice(0, 5).map((n) => ({
          target: n.target,
          html: n.html.slice(0, 300),
          summary: n.failureSummary,
        })),
        count: v.nodes.length,
      }));
      const file = join(out, slug(path, lang));
      await page.screenshot({ path: file, fullPage: true, timeout: 10_000 });
      result.screenshot = file;
    } catch (error) {
      result.error = String(error?.message || error).split("\n").slice(0, 8).join("\n");
    } finally {
      await context.close();
    }
    result.ms = Date.now() - t0;
    const serious = (result.violations ?? []).filter((v) => ["serious", "critical"].includes(v.impact));
    log(
      `[axe] ${path} (${lang}): status ${result.status}, ${result.violations?.length ?? "?"} violations` +
        ` (${serious.length} serious/critical)${result.error ? ", error: " + result.error : ""}`,
    );
    results.push(result);
  }
} finally {
  await browser.close();
  emit({ pages: results, artifacts: out, ms: Date.now() - started });
}
