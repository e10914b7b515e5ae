// Shared by the browser scripts: argument parsing, launching Debian's Chromium through
// playwright-core (no browser is downloaded: `executablePath`), timing, and the one JSON line
// each script prints on stdout for tests/e2e/test_web_browser.py. Logs go to stderr.
import { existsSync, mkdirSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

export const HERE = dirname(fileURLToPath(import.meta.url));
export const require = createRequire(import.meta.url);

// Flags that keep Chromium quiet on a machine with no network but loopback: without the
// background-networking ones it floods the closed network with refused connections.
// Playwright's chromium.launch() gives it a new, empty temporary --user-data-dir itself.
export const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--disable-dev-shm-usage",
];

/** `--name value` pairs from argv into an object; bare `--flag` becomes true. */
export function parseArgs(argv = process.argv.slice(2)) {
  const args = {};
  for (let i = 0; i < argv.length; i++) {
    const key = argv[i];
    if (!key.startsWith("--")) throw new Error(`unexpected argument ${key}`);
    const next = argv[i + 1];
    if (next === undefined || next.startsWith("--")) args[key.slice(2)] = true;
    else {
      args[key.slice(2)] = next;
      i++;
    }
  }
  return args;
}

export function log(...parts) {
  process.stderr.write(parts.join(" ") + "\n");
}

export function chromiumPath() {
  return process.env.CHROMIUM_PATH || "/usr/bin/chromium";
}

export async function launch() {
  const { chromium } = require("playwright-core");
  const executablePath = chromiumPath();
  if (!existsSync(executablePath)) {
    throw new Error(`${executablePath} is missing: run scripts/install-browser-tools.sh`);
  }
  return chromium.launch({
    executablePath,
    headless: true,
    args: CHROMIUM_ARGS,
    // Playwright's own defaults already include most of these; its --enable-automation
    // and friends stay. Nothing else is added.
    timeout: 60_000,
  });
}

export function ensureDir(path) {
  mkdirSync(path, { recursive: true });
  return path;
}

export function artifactsDir(args) {
  return ensureDir(args.out || join(HERE, "artifacts"));
}

/** The one machine-readable line; the pytest side parses the last line of stdout. */
export function emit(summary) {
  process.stdout.write(JSON.stringify(summary) + "\n");
}

export function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls `fn` (returning `{ ok, ... }`) until `ok` or `timeoutMs` passes; returns the last
 * value. A throw (say, the page navigated away mid-evaluate) counts as not yet. */
export async function waitFor(fn, timeoutMs = 5000, intervalMs = 100) {
  const deadline = Date.now() + timeoutMs;
  let value = { ok: false };
  for (;;) {
    try {
      value = await fn();
    } catch (error) {
      value = { ok: false, error: String(error?.message || error) };
    }
    if (value?.ok) return value;
    if (Date.now() > deadline) return value;
    await sleep(intervalMs);
  }
}
