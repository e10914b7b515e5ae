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

document.addEventListener("DOMContentLoaded", () => {
  setupCopy();
  setupTabs();
  setupCatalog();
});
