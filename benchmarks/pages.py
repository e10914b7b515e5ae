"""The website's cost: rendering a model page (the template, samples and figures, no cache)
in-process, and fetching one from the running gateway over HTTP (what a visitor waits for,
the page cache included). Issue 14's target: a model page renders in ≤ 5 ms at the median."""

from __future__ import annotations

import statistics
import time
import urllib.request
from typing import Any

from modelport.services.catalog import load_catalog
from modelport.settings import load_settings
from modelport.web.site import Figures, Site

PAGE_MODEL = "qwen/qwen3-8b"


def render_ms(repeat: int = 200) -> dict[str, float]:
    """Median milliseconds to render each shipped model's page, uncached, in English."""
    catalog = load_catalog(load_settings({}))
    site = Site(catalog, public_url="https://api.example.com", fallback_url="", store=None)
    out: dict[str, float] = {}
    for card in site.models:
        site._model("en", "https://api.example.com", card, Figures())  # templates compiled
        times = []
        for _ in range(repeat):
            began = time.perf_counter()
            site._model("en", "https://api.example.com", card, Figures())
            times.append((time.perf_counter() - began) * 1000)
        out[card.id] = statistics.median(times)
    return out


def fetch_ms(base_url: str, repeat: int = 200) -> float:
    """Median milliseconds for GET /models/{PAGE_MODEL} from a running server."""
    url = f"{base_url}/models/{PAGE_MODEL}"
    times = []
    for _ in range(repeat + 5):
        began = time.perf_counter()
        with urllib.request.urlopen(url, timeout=10) as response:
            response.read()
        times.append((time.perf_counter() - began) * 1000)
    return statistics.median(times[5:])


def measure(base_url: str | None) -> dict[str, Any]:
    renders = render_ms()
    return {
        "render_ms_median_by_model": renders,
        "render_ms_median": max(renders.values()),  # the slowest model's median
        "fetch_ms_median": fetch_ms(base_url) if base_url else None,
    }


if __name__ == "__main__":
    print(measure(None))
