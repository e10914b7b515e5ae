// modelport's pages: copy buttons, sample tabs, and live catalog filtering. The pages work
// without it (the catalog's form reloads the page with the same filters).
"use strict";

function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    return navigator.clipboard.writeText(text);
  }
  const area = document.createElement("textarea");
  area.value = text;
  area.setAttribute("readonly", "");
  area.className = "offscreen";
  document.body.appendChild(area);
  area.select();
  try { document.execCommand("copy"); } finally { area.remove(); }
  return Promise.resolve();
}

function setupCopy() {
  const copied = document.body.dataset.copied || "Copied";
  const copy = document.body.dataset.copy || "Copy";
  document.querySelectorAll("button.copy").forEach((button) => {
    button.addEventListener("click", () => {
      const target = document.getElementById(button.dataset.copyTarget);
      if (!target) return;
      copyText(target.textContent).then(() => {
        button.textContent = copied;
        setTimeout(() => { button.textContent = copy; }, 2000);
      });
    });
  });
}

function setupTabs() {
  const list = document.getElementById("sample-tabs");
  if (!list) return;
  const tabs = Array.from(list.querySelectorAll('[role="tab"]'));
  function select(tab) {
    tabs.forEach((other) => {
      const selected = other === tab;
      other.setAttribute("aria-selected", selected ? "true" : "false");
      other.tabIndex = selected ? 0 : -1;
      const panel = document.getElementById(other.getAttribute("aria-controls"));
      if (panel) panel.hidden = !selected;
    });
  }
  tabs.forEach((tab, index) => {
    tab.addEventListener("click", () => select(tab));
    tab.addEventListener("keydown", (event) => {
      let next = null;
      if (event.key === "ArrowRight") next = tabs[(index + 1) % tabs.length];
      else if (event.key === "ArrowLeft") next = tabs[(index - 1 + tabs.length) % tabs.length];
      else if (event.key === "Home") next = tabs[0];
      else if (event.key === "End") next = tabs[tabs.length - 1];
      if (next) { event.preventDefault(); select(next); next.focus(); }
    });
  });
}

function setupCatalog() {
  const form = document.getElementById("filters");
  const list = document.getElementById("models");
  if (!form || !list) return;
  const cards = Array.from(list.querySelectorAll(".model-card"));
  const order = new Map(cards.map((card, index) => [card, index]));  // server's "popular" order
  const count = document.getElementById("count");
  const empty = document.getElementById("no-match");
  function apply() {
    const data = new FormData(form);
    const words = String(data.get("q") || "").toLowerCase().split(/\s+/).filter(Boolean);
    const family = String(data.get("family") || "");
    const caps = data.getAll("cap").map(String);
    const sort = String(data.get("sort") || "popular");
    let shown = 0;
    cards.forEach((card) => {
      const tags = (card.dataset.tags || "").split(" ");
      const ok = words.every((word) => card.dataset.text.includes(word))
        && (!family || card.dataset.family === family)
        && caps.every((cap) => tags.includes(cap));
      card.hidden = !ok;
      if (ok) shown += 1;
    });
    const sorted = cards.slice().sort((a, b) => {
      if (sort === "newest") return (b.dataset.released || "").localeCompare(a.dataset.released || "");
      if (sort === "price") return Number(a.dataset.price) - Number(b.dataset.price);
      if (sort === "context") return Number(b.dataset.context) - Number(a.dataset.context);
      return order.get(a) - order.get(b);
    });
    sorted.forEach((card) => list.appendChild(card));
    if (count) {
      count.textContent = count.dataset.template
        .replace("{shown}", String(shown)).replace("{total}", String(cards.length));
    }
    if (empty) empty.hidden = shown !== 0;
    const params = new URLSearchParams();
    for (const [key, value] of data.entries()) {
      if (value && !(key === "sort" && value === "popular")) params.append(key, String(value));
    }
    const query = params.toString();
    history.replaceState(null, "", query ? "?" + query : location.pathname);
  }
  form.addEventListener("input", apply);
  form.addEventListener("change", apply);
  form.addEventListener("submit", (event) => { event.preventDefault(); apply(); });
}

// The console's playground: the browser calls the API itself with the user's key (kept in
// this tab's sessionStorage, never sent to the console) and streams the answer, the
// reasoning apart, then shows the usage and cost. Without this script the form posts to the
// console and the answer comes back whole.
function setupPlayground() {
  const form = document.getElementById("playground");
  if (!form) return;
  const key = document.getElementById("pg-key");
  const reasoning = document.getElementById("pg-reasoning");
  const answer = document.getElementById("pg-answer");
  const usage = document.getElementById("pg-usage");
  const send = document.getElementById("pg-send");
  key.value = sessionStorage.getItem("modelport-key") || "";
  const numbers = ["temperature", "top_p", "top_k", "min_p", "presence_penalty",
    "frequency_penalty", "repetition_penalty", "max_tokens", "seed"];
  const integers = new Set(["top_k", "max_tokens", "seed"]);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const data = new FormData(form);
    sessionStorage.setItem("modelport-key", String(data.get("key") || ""));
    const messages = [];
    const system = String(data.get("system") || "").trim();
    if (system) messages.push({ role: "system", content: system });
    messages.push({ role: "user", content: String(data.get("message") || "") });
    const body = {
      model: String(data.get("model")), messages, stream: true,
      stream_options: { include_usage: true },
    };
    for (const name of numbers) {
      const text = String(data.get(name) || "").trim();
      if (text) body[name] = integers.has(name) ? parseInt(text, 10) : parseFloat(text);
    }
    const effort = String(data.get("reasoning_effort") || "");
    if (effort) body.reasoning_effort = effort;
    reasoning.textContent = "";
    answer.textContent = "";
    usage.textContent = "";
    send.disabled = true;
    try {
      const response = await fetch("/v1/chat/completions", {
        method: "POST",
        headers: { "Content-Type": "application/json", Authorization: "Bearer " + data.get("key") },
        body: JSON.stringify(body),
      });
      if (!response.ok) {
        const failure = await response.json().catch(() => ({}));
        usage.textContent = (failure.error && failure.error.message) || response.statusText;
        return;
      }
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        const events = buffer.split("\n\n");
        buffer = events.pop();
        for (const block of events) {
          for (const line of block.split("\n")) {
            if (!line.startsWith("data: ") || line === "data: [DONE]") continue;
            const chunk = JSON.parse(line.slice(6));
            if (chunk.error) { usage.textContent = chunk.error.message; continue; }
            const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
            if (delta && delta.reasoning) reasoning.textContent += delta.reasoning;
            if (delta && delta.content) answer.textContent += delta.content;
            if (chunk.usage) {
              const u = chunk.usage;
              const thought = (u.completion_tokens_details || {}).reasoning_tokens || 0;
              usage.textContent = `${u.prompt_tokens} + ${u.completion_tokens} tokens`
                + ` (${thought} reasoning)` + (u.cost !== undefined ? ` · ¥${u.cost}` : "");
            }
          }
        }
      }
    } catch (error) {
      usage.textContent = String(error);
    } finally {
      send.disabled = false;
    }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  setupCopy();
  setupTabs();
  setupCatalog();
  setupPlayground();
});
