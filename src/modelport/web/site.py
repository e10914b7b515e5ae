"""The public website: home, the model catalog, a page per model and how to get a key,
rendered on the server from the catalog, the code samples and the usage rows.

Pages are Jinja2 templates (`web/templates/`) with one stylesheet and one small script
(`web/static/`); nothing comes from another site. A page is rendered once per language, base
URL and figures: the result is kept (a bounded cache) until the usage figures are refreshed,
so most views cost a dictionary lookup, and every answer carries an ETag so a browser's
revalidation costs no body. The figures (most used in 7 days, the last 24 hours per model)
come from the usage rows, read off the event loop at most every `STATS_TTL_S` seconds.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import resources
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

import jinja2
import msgspec

from modelport.core.catalog import CAPABILITIES, Catalog, ModelCard
from modelport.core.collect import Completion
from modelport.core.events import Usage
from modelport.protocols.openai.encode import encode_completion
from modelport.store.base import BillingStore, ModelActivity
from modelport.web import i18n
from modelport.web.i18n import Lang
from modelport.web.params import ParamDoc, parameter_reference
from modelport.web.samples import Sample, agent_recipes, code_samples

log = logging.getLogger("modelport.web")

STATS_TTL_S = 30.0
CACHE_ENTRIES = 512
MAX_QUERY = 512  # characters of a catalog search kept
HTML = "text/html; charset=utf-8"
SORTS = ("popular", "newest", "price", "context")
_HOST = re.compile(r"^[A-Za-z0-9.\-]{1,253}(:[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]{2,45}\](:[0-9]{1,5})?$")


@dataclass(frozen=True)
class Page:
    body: bytes
    etag: str
    headers: tuple[tuple[str, str], ...] = ()
    status: int = 200


@dataclass
class Figures:
    """What the pages show from the usage rows."""

    popular: dict[str, int] = field(default_factory=dict)  # model -> requests in 7 days
    day: dict[str, ModelActivity] = field(default_factory=dict)  # model -> last 24 hours
    version: int = 0


class SiteStats:
    """The usage figures, read from the store off the loop, at most every `ttl` seconds; a
    read runs in the background while the previous figures are shown (the first is awaited)."""

    def __init__(self, store: BillingStore | None, ttl: float = STATS_TTL_S) -> None:
        self._store = store
        self._ttl = ttl
        self._figures = Figures()
        self._read_at: float | None = None
        self._reading: asyncio.Task[None] | None = None

    async def current(self) -> Figures:
        now = time.monotonic()
        if self._store is None:
            return self._figures
        if self._read_at is None:
            await self._refresh()
        elif now - self._read_at > self._ttl and self._reading is None:
            self._reading = asyncio.ensure_future(self._refresh())
            self._reading.add_done_callback(self._read_done)
        return self._figures

    def _read_done(self, task: asyncio.Task[None]) -> None:
        self._reading = None
        if not task.cancelled() and task.exception() is not None:
            log.warning("reading usage figures failed: %s", task.exception())

    async def _refresh(self) -> None:
        store = self._store
        assert store is not None
        now = datetime.now(UTC)
        self._read_at = time.monotonic()  # a failing read is not retried at every view
        week, day = await asyncio.to_thread(
            lambda: (
                store.model_activity(now - timedelta(days=7), sample=1),
                store.model_activity(now - timedelta(days=1)),
            )
        )
        self._figures = Figures(
            popular={activity.model: activity.requests for activity in week},
            day={activity.model: activity for activity in day},
            version=self._figures.version + 1,
        )

    async def aclose(self) -> None:
        if self._reading is not None:
            self._reading.cancel()


def _etag(body: bytes) -> str:
    return '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"'


def _group_digits(value: int) -> str:
    return f"{value:,}"


def _context(value: int) -> str:
    """Tokens as people write them: 131072 -> "128K", 262144 -> "256K", 1048576 -> "1M"."""
    if value >= 1 << 20 and value % (1 << 20) == 0:
        return f"{value >> 20}M"
    if value >= 1024 and value % 1024 == 0:
        return f"{value >> 10}K"
    return _group_digits(value)


def _price(value: str) -> str:
    text = value.rstrip("0").rstrip(".") if "." in value else value
    return text or "0"


def _is_free(card: ModelCard) -> bool:
    return card.pricing.input_nano == 0 and card.pricing.output_nano == 0


def _released_key(card: ModelCard) -> str:
    return card.released or (
        datetime.fromtimestamp(card.created, UTC).date().isoformat() if card.created else ""
    )


class Site:
    """Renders the pages; `page` answers one path (None: not a page of the site)."""

    def __init__(
        self,
        catalog: Catalog,
        *,
        public_url: str | None,
        fallback_url: str,
        store: BillingStore | None,
        stats_ttl: float = STATS_TTL_S,
    ) -> None:
        self.catalog = catalog
        self.models = tuple(card for card in catalog.models if not card.hidden)
        self._public_url = public_url.rstrip("/") if public_url else None
        self._fallback_url = fallback_url.rstrip("/")
        self.stats = SiteStats(store, stats_ttl)
        self._env = jinja2.Environment(
            loader=jinja2.PackageLoader("modelport.web", "templates"),
            autoescape=True,
            trim_blocks=True,
            lstrip_blocks=True,
            undefined=jinja2.StrictUndefined,
        )
        self._env.filters["context"] = _context
        self._env.filters["digits"] = _group_digits
        self._env.filters["price"] = _price
        self._env.filters["urlpath"] = lambda text: quote(str(text), safe="/")
        self._cache: OrderedDict[tuple[Any, ...], Page] = OrderedDict()
        self._cache_version = -1
        self._static = {
            name: self._static_page(name, content_type)
            for name, content_type in (
                ("site.css", "text/css; charset=utf-8"),
                ("site.js", "text/javascript; charset=utf-8"),
                ("favicon.svg", "image/svg+xml"),
            )
        }
        # What does not change while the server runs: per model and base URL.
        self._params: dict[str, list[ParamDoc]] = {
            card.id: parameter_reference(card) for card in self.models
        }
        self._examples: dict[str, str] = {card.id: _example_response(card) for card in self.models}
        self._samples: dict[tuple[str, str], tuple[list[Sample], list[Sample]]] = {}

    # ------------------------------------------------------------------ requests

    def base_url(self, host: str | None) -> str:
        """The URL the samples and endpoints show: the configured public URL, else the Host
        the browser asked for (when it is a plain host name), else the server's address."""
        if self._public_url:
            return self._public_url
        if host and _HOST.match(host):
            return f"http://{host}"
        return self._fallback_url

    def static(self, name: str) -> Page | None:
        return self._static.get(name)

    async def page(
        self,
        path: str,
        *,
        query: str,
        cookie: str | None,
        accept_language: str | None,
        host: str | None,
    ) -> Page | None:
        params = parse_qs(query[:2048], keep_blank_values=False)
        langs = params.get("lang")
        asked = langs[0] if langs else None
        lang = i18n.choose(asked, i18n.cookie_value(cookie), accept_language)
        headers: tuple[tuple[str, str], ...] = (("vary", "Accept-Language, Cookie"),)
        if asked is not None and i18n.known(asked) is not None:
            cookie_header = (
                f"{i18n.COOKIE}={lang}; Path=/; Max-Age={i18n.COOKIE_MAX_AGE}; SameSite=Lax"
            )
            headers += (("set-cookie", cookie_header),)
        figures = await self.stats.current()
        if figures.version != self._cache_version:
            self._cache.clear()
            self._cache_version = figures.version
        base = self.base_url(host)
        render: Callable[[], tuple[int, str]]
        if path in ("/", ""):
            key: tuple[Any, ...] = ("home", lang, base)
            render = lambda: (200, self._home(lang, base, figures))  # noqa: E731
        elif path == "/models":
            filters = CatalogQuery.parse(params)
            key = ("catalog", lang, filters)
            render = lambda: (200, self._catalog(lang, filters, figures))  # noqa: E731
        elif path.startswith("/models/"):
            model_id = path[len("/models/") :]
            card = self.catalog.get(model_id)
            if card is None or card.hidden:
                key = ("missing", lang)
                render = lambda: (404, self._missing(lang, figures))  # noqa: E731
            else:
                key = ("model", lang, base, card.id)
                render = lambda: (200, self._model(lang, base, card, figures))  # noqa: E731
        elif path == "/get-apikey":
            key = ("key", lang, base)
            render = lambda: (200, self._get_key(lang, base))  # noqa: E731
        else:
            return None
        cached = self._cache.get(key)
        if cached is None:
            status, text = render()
            body = text.encode()
            cached = Page(body, _etag(body), status=status)
            self._cache[key] = cached
            if len(self._cache) > CACHE_ENTRIES:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        return Page(cached.body, cached.etag, headers, cached.status)

    async def aclose(self) -> None:
        await self.stats.aclose()

    # ------------------------------------------------------------------ pages

    def _common(self, lang: Lang, figures: Figures) -> dict[str, Any]:
        by_use = sorted(self.models, key=lambda c: (-figures.popular.get(c.id, 0), c.name))
        newest = sorted(self.models, key=lambda c: (_released_key(c), c.name), reverse=True)
        return {
            "t": _WORDS[lang],
            "lang": lang,
            "html_lang": i18n.HTML_LANG[lang],
            "other_lang": "zh" if lang == "en" else "en",
            "most_used": by_use[:5],
            "newest_models": newest[:5],
            "popular": figures.popular,
            "describe": lambda card: _description(card, lang),
            "capabilities": CAPABILITIES,
            "is_free": _is_free,
        }

    def _render(self, template: str, **values: Any) -> str:
        return self._env.get_template(template).render(**values)

    def render(self, template: str, lang: Lang, **values: Any) -> str:
        """A page of another part of the site (the console) with the site's frame and words;
        never cached (it is the visitor's own)."""
        return self._render(
            template,
            **self._common(lang, Figures()),
            title=values.pop("title", "modelport"),
            path=values.pop("path", "/console"),
            **values,
        )

    def _home(self, lang: Lang, base: str, figures: Figures) -> str:
        common = self._common(lang, figures)
        featured = [card for card in common["most_used"] if not card.id.startswith("local/")]
        return self._render(
            "home.html",
            **common,
            base=base,
            featured=(featured or common["most_used"])[:4],
            title=i18n.TEXT[lang]["home_title"],
            path="/",
        )

    def _catalog(self, lang: Lang, query: CatalogQuery, figures: Figures) -> str:
        common = self._common(lang, figures)
        shown = query.apply(self.models, figures.popular, lambda c: _description(c, lang))
        families = sorted({card.family for card in self.models if card.family})
        return self._render(
            "catalog.html",
            **common,
            models=self.models,
            shown={card.id for card in shown},
            ordered=shown + [c for c in self.models if c not in shown],
            query=query,
            families=families,
            sorts=SORTS,
            title=i18n.TEXT[lang]["catalog_title"],
            path="/models",
        )

    def _model(self, lang: Lang, base: str, card: ModelCard, figures: Figures) -> str:
        common = self._common(lang, figures)
        samples, recipes = self._samples_for(base, card)
        return self._render(
            "model.html",
            **common,
            card=card,
            base=base,
            samples=[s for s in samples if not _is_extra(s)],
            stream_samples=[s for s in samples if s.key.endswith("-stream")],
            anthropic_samples=[s for s in samples if "anthropic" in s.key],
            recipes=recipes,
            params=self._params[card.id],
            example=self._examples[card.id],
            activity=figures.day.get(card.id),
            title=card.name,
            path="/models/" + card.id,
        )

    def parameter_reference(self, model_id: str) -> list[ParamDoc]:
        """The parameter reference of a catalog model (made once at start-up)."""
        return self._params[model_id]

    def _samples_for(self, base: str, card: ModelCard) -> tuple[list[Sample], list[Sample]]:
        """The code samples and agent recipes for a base URL and model, made once."""
        key = (base, card.id)
        made = self._samples.get(key)
        if made is None:
            made = self._samples[key] = (code_samples(base, card), agent_recipes(base, card))
            if len(self._samples) > CACHE_ENTRIES:
                del self._samples[next(iter(self._samples))]
        return made

    def _missing(self, lang: Lang, figures: Figures) -> str:
        return self._render(
            "missing.html",
            **self._common(lang, figures),
            title=i18n.TEXT[lang]["not_found"],
            path="/models",
        )

    def _get_key(self, lang: Lang, base: str) -> str:
        return self._render(
            "get_apikey.html",
            **self._common(lang, Figures()),
            base=base,
            title=i18n.TEXT[lang]["key_title"],
            path="/get-apikey",
        )

    @staticmethod
    def _static_page(name: str, content_type: str) -> Page:
        body = resources.files("modelport.web").joinpath("static", name).read_bytes()
        return Page(
            body,
            _etag(body),
            (("content-type", content_type), ("cache-control", "public, max-age=3600")),
        )


# The words as attributes (`t.copy` on a dict would find dict.copy); `t['tag_' ~ x]` works too.
_WORDS = {lang: SimpleNamespace(**words) for lang, words in i18n.TEXT.items()}


def _is_extra(sample: Sample) -> bool:
    return sample.key.endswith("-stream") or "anthropic" in sample.key


def _description(card: ModelCard, lang: Lang) -> str:
    if lang == "zh" and card.description_zh:
        return card.description_zh
    return card.description


def _example_response(card: ModelCard) -> str:
    """A non-streaming answer as this server encodes it (the same encoder as the API)."""
    thinks = card.thinking != "none"
    completion = Completion(
        model=card.id,
        backend="",
        text="Hello! I can answer questions, write and explain code, and call your tools.",
        reasoning="The user greets me and asks what I can do." if thinks else None,
        tool_calls=(),
        logprobs=None,
        usage=Usage(
            prompt_tokens=14,
            completion_tokens=27 if thinks else 16,
            reasoning_tokens=11 if thinks else 0,
            cost_nano=card.pricing.cost_nano(14, 27 if thinks else 16),
        ),
        finish_reason="stop",
        native_finish_reason="stop",
    )
    body = encode_completion(
        completion, completion_id="chatcmpl-0123456789abcdef01234567", created=1764720000
    )
    return msgspec.json.format(body, indent=2).decode()


@dataclass(frozen=True)
class CatalogQuery:
    """The catalog's search, filters and order, from the address (and the same on the
    client: web/static/site.js)."""

    q: str = ""
    family: str = ""
    caps: tuple[str, ...] = ()
    anthropic: bool = False
    sort: str = "popular"

    @classmethod
    def parse(cls, params: dict[str, list[str]]) -> CatalogQuery:
        q = (params.get("q") or [""])[0].strip()[:MAX_QUERY]
        family = (params.get("family") or [""])[0][:64]
        caps = tuple(sorted({c for c in params.get("cap", []) if c in CAPABILITIES}))
        sort = (params.get("sort") or ["popular"])[0]
        return cls(
            q=q,
            family=family,
            caps=caps,
            anthropic=(params.get("anthropic") or [""])[0] == "1",
            sort=sort if sort in SORTS else "popular",
        )

    def query_string(self) -> str:
        pairs: list[tuple[str, str]] = []
        if self.q:
            pairs.append(("q", self.q))
        if self.family:
            pairs.append(("family", self.family))
        pairs += [("cap", cap) for cap in self.caps]
        if self.anthropic:
            pairs.append(("anthropic", "1"))
        if self.sort != "popular":
            pairs.append(("sort", self.sort))
        return urlencode(pairs)

    def apply(
        self,
        models: Sequence[ModelCard],
        popular: dict[str, int],
        describe: Callable[[ModelCard], str],
    ) -> list[ModelCard]:
        words = self.q.lower().split()
        out = []
        for card in models:
            text = f"{card.name} {card.id} {card.family} {describe(card)}".lower()
            if words and not all(word in text for word in words):
                continue
            if self.family and card.family != self.family:
                continue
            if any(cap not in card.tags for cap in self.caps):
                continue
            out.append(card)
        # Every catalog model is served by the Anthropic door too (`anthropic` keeps all).
        if self.sort == "newest":
            out.sort(key=lambda c: (_released_key(c), c.name), reverse=True)
        elif self.sort == "price":
            out.sort(key=lambda c: (c.pricing.input_nano + c.pricing.output_nano, c.name))
        elif self.sort == "context":
            out.sort(key=lambda c: (-c.context_length, c.name))
        else:
            out.sort(key=lambda c: (-popular.get(c.id, 0), c.name))
        return out
