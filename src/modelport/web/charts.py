"""Charts drawn on the server as SVG: no script, no library, nothing from another site.

`bars` draws one bar per labelled value (a day's spend, a model's tokens), scaled to the
largest, with the value above each bar and the label below; the chart has a title for screen
readers (`role="img"`, `<title>`), and a table beside it in the page carries the same numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from html import escape

WIDTH = 720
HEIGHT = 220
TOP = 24  # room for the values above the bars
BOTTOM = 36  # room for the labels below them
LEFT = 8


def bars(
    points: Sequence[tuple[str, float]],
    *,
    title: str,
    value_text: Callable[[float], str] = lambda value: f"{value:g}",
    chart_id: str = "chart",
) -> str:
    """An SVG bar chart of `points` (label, value ≥ 0); an empty chart says so."""
    heading = f'<title id="{chart_id}-title">{escape(title)}</title>'
    opening = (
        f'<svg id="{chart_id}" class="chart" role="img" aria-labelledby="{chart_id}-title" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" xmlns="http://www.w3.org/2000/svg">{heading}'
    )
    if not points:
        return opening + "</svg>"
    largest = max(value for _, value in points) or 1.0
    slot = (WIDTH - LEFT) / len(points)
    width = max(2.0, slot * 0.7)
    room = HEIGHT - TOP - BOTTOM
    parts = [opening]
    # Labels thin out when there are many bars (every n-th one is shown).
    every = max(1, round(len(points) / 12))
    for index, (label, value) in enumerate(points):
        height = 0.0 if value <= 0 else max(1.0, room * value / largest)
        x = LEFT + index * slot + (slot - width) / 2
        y = TOP + room - height
        parts.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{width:.1f}" height="{height:.1f}" '
            f'fill="#0b5cad"><title>{escape(label)}: {escape(value_text(value))}</title></rect>'
        )
        middle = x + width / 2
        if len(points) <= 16:
            parts.append(
                f'<text x="{middle:.1f}" y="{y - 4:.1f}" font-size="11" text-anchor="middle" '
                f'fill="#1b1f24">{escape(value_text(value))}</text>'
            )
        if index % every == 0:
            parts.append(
                f'<text x="{middle:.1f}" y="{HEIGHT - BOTTOM + 16}" font-size="11" '
                f'text-anchor="middle" fill="#57606a">{escape(label)}</text>'
            )
    parts.append("</svg>")
    return "".join(parts)
