"""Inline SVG charts for the pages: no JavaScript, no CDN, every label escaped."""

from __future__ import annotations

from markupsafe import Markup, escape

__all__ = ["PALETTE", "lines"]

PALETTE = (
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
)  # fmt: skip
_W, _H, _PAD = 640, 220, 36


def lines(
    series: dict[str, list[float]],
    *,
    x_labels: list[str],
    title: str,
    y_unit: str = "",
) -> Markup:
    """A line chart of ``series`` (name -> one value per x position) as an SVG element.

    Args:
        series: the lines; each list as long as ``x_labels``.
        x_labels: the label of each x position (a few are drawn).
        title: the chart's accessible title.
        y_unit: appended to the top y label (``"s"``).

    Returns:
        Safe markup: an ``<svg>`` with a ``<title>``, axes, one ``<polyline>`` per
        series and a legend.
    """
    count = max(len(x_labels), 1)
    top = max([v for values in series.values() for v in values] + [1.0])
    width = _W - 2 * _PAD
    height = _H - 2 * _PAD

    def x(index: int) -> float:
        return _PAD + (width * index / (count - 1) if count > 1 else width / 2)

    def y(value: float) -> float:
        return _H - _PAD - height * value / top

    legend_height = 20 * ((len(series) + 2) // 3)
    parts = [
        (
            f'<svg xmlns="http://www.w3.org/2000/svg" role="img" '
            f'viewBox="0 0 {_W} {_H + legend_height}" class="chart"><title>{escape(title)}</title>'
        ),
        f'<line x1="{_PAD}" y1="{_H - _PAD}" x2="{_W - _PAD}" y2="{_H - _PAD}" stroke="#888"/>',
        f'<line x1="{_PAD}" y1="{_PAD}" x2="{_PAD}" y2="{_H - _PAD}" stroke="#888"/>',
        f'<text x="4" y="{_PAD}" font-size="11">{top:g}{escape(y_unit)}</text>',
        f'<text x="4" y="{_H - _PAD}" font-size="11">0</text>',
    ]
    step = max(1, count // 6)
    parts.extend(
        f'<text x="{x(index):.1f}" y="{_H - _PAD + 14}" font-size="10" '
        f'text-anchor="middle">{escape(x_labels[index])}</text>'
        for index in range(0, min(count, len(x_labels)), step)
    )
    for number, (name, values) in enumerate(series.items()):
        colour = PALETTE[number % len(PALETTE)]
        points = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(values))
        parts.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{points}">'
            f"<title>{escape(name)}</title></polyline>"
        )
        lx = _PAD + (number % 3) * 200
        ly = _H + 20 * (number // 3)
        parts.append(f'<rect x="{lx}" y="{ly - 9}" width="10" height="10" fill="{colour}"/>')
        parts.append(f'<text x="{lx + 14}" y="{ly}" font-size="11">{escape(name)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every text above is escaped; the rest are numbers
