"""Charts drawn on the server as inline SVG: nothing to download, nothing to run in the browser.

Every text that comes from data (a source's name, a title) is escaped; numbers are formatted here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from markupsafe import Markup, escape

STATUS_COLOURS = {
    "kept": "#a7b0ba",
    "pending": "#e09f1f",
    "confirmed": "#c62828",
    "released": "#2a9d8f",
    "relabelled": "#6a4c93",
}
FLAGGED = "#c62828"
UNFLAGGED = "#a7b0ba"
# Ten colours told apart also by most colour-blind readers (Tableau's 10), for classes and sources;
# an eleventh category and on reuse them in order.
CATEGORY_COLOURS = (
    "#4e79a7",
    "#f28e2b",
    "#e15759",
    "#76b7b2",
    "#59a14f",
    "#edc948",
    "#b07aa1",
    "#ff9da7",
    "#9c755f",
    "#bab0ac",
)


def category_colours(names: Sequence[str]) -> dict[str, str]:
    """A colour per name, in the order given."""
    return {n: CATEGORY_COLOURS[i % len(CATEGORY_COLOURS)] for i, n in enumerate(names)}


def _num(v: float) -> str:
    return f"{v:.3g}"


def _svg(width: int, height: int, label: str, body: list[str], attrs: str = "") -> Markup:
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-label="{escape(label)}"{attrs}>'
        f"<title>{escape(label)}</title>"
    )
    return Markup(head + "".join(body) + "</svg>")


def histogram(
    values: np.ndarray,
    *,
    flagged: np.ndarray | None = None,
    threshold: float | None = None,
    marker: float | None = None,
    title: str = "",
    bins: int = 30,
    width: int = 320,
    height: int = 130,
) -> Markup:
    """Histogram of ``values`` (a class's scores), flagged samples stacked in red, the threshold as a
    dashed line (none when it is infinite: the class was judged clean) and ``marker`` (one sample's
    score) as a blue line."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    pad_l, pad_r, pad_t, pad_b = 8, 8, 18 if title else 6, 20
    body: list[str] = []
    if title:
        body.append(f'<text x="{pad_l}" y="12" class="t">{escape(title)}</text>')
    if len(v) == 0:
        body.append(f'<text x="{pad_l}" y="{height // 2}" class="t">no scores</text>')
        return _svg(width, height, title or "histogram", body)
    extra = [x for x in (threshold, marker) if x is not None and math.isfinite(x)]
    lo, hi = float(min([v.min(), *extra])), float(max([v.max(), *extra]))
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, bins + 1)
    counts, _ = np.histogram(v, edges)
    flag_counts = np.zeros_like(counts)
    if flagged is not None:
        f = np.asarray(flagged, dtype=bool)[np.isfinite(np.asarray(values, dtype=np.float64))]
        flag_counts, _ = np.histogram(v[f], edges)
    plot_w, plot_h = width - pad_l - pad_r, height - pad_t - pad_b
    top = max(int(counts.max()), 1)
    bar_w = plot_w / bins

    def x_of(score: float) -> float:
        return pad_l + (score - lo) / (hi - lo) * plot_w

    for i, (n, nf) in enumerate(zip(counts, flag_counts, strict=True)):
        if n == 0:
            continue
        x = pad_l + i * bar_w
        h_all = plot_h * n / top
        h_flag = plot_h * nf / top
        base = pad_t + plot_h
        span = f"{_num(edges[i])} to {_num(edges[i + 1])}"
        body.append(
            f'<rect x="{x:.1f}" y="{base - h_all:.1f}" width="{max(bar_w - 1, 1):.1f}" height="{h_all - h_flag:.1f}" '
            f'fill="{UNFLAGGED}"><title>{n} samples scored {span}</title></rect>'
        )
        if nf:
            body.append(
                f'<rect x="{x:.1f}" y="{base - h_flag:.1f}" width="{max(bar_w - 1, 1):.1f}" height="{h_flag:.1f}" '
                f'fill="{FLAGGED}"><title>{nf} flagged samples scored {span}</title></rect>'
            )
    base = pad_t + plot_h
    body.append(f'<line x1="{pad_l}" y1="{base}" x2="{width - pad_r}" y2="{base}" stroke="#555"/>')
    body.append(f'<text x="{pad_l}" y="{height - 5}" class="a">{_num(lo)}</text>')
    body.append(f'<text x="{width - pad_r}" y="{height - 5}" class="a" text-anchor="end">{_num(hi)}</text>')
    if threshold is not None and math.isfinite(threshold):
        x = x_of(threshold)
        body.append(
            f'<line class="threshold" x1="{x:.1f}" y1="{pad_t}" x2="{x:.1f}" y2="{base}" stroke="#000" '
            f'stroke-dasharray="4 3"><title>threshold {_num(threshold)}</title></line>'
        )
        anchor = "end" if x > pad_l + plot_w / 2 else "start"
        gap = -3 if anchor == "end" else 3
        body.append(
            f'<text x="{x + gap:.1f}" y="{pad_t + 9}" class="a" text-anchor="{anchor}">thr {_num(threshold)}</text>'
        )
    if marker is not None and math.isfinite(marker):
        x = x_of(marker)
        body.append(
            f'<line class="marker" x1="{x:.1f}" y1="{pad_t - 4}" x2="{x:.1f}" y2="{base}" stroke="#1d4ed8" '
            f'stroke-width="2.5"><title>this sample: {_num(marker)}</title></line>'
        )
    return _svg(width, height, title or "histogram", body)


def stacked_bars(
    rows: Sequence[tuple[str, int, dict[str, int]]],
    *,
    title: str,
    width: int = 560,
    row_height: int = 22,
) -> Markup:
    """One horizontal bar per row ``(name, samples, {status: quarantined})``: the quarantined part in
    status colours, the bar's length the quarantined count, ``samples`` written beside it."""
    label_w, pad_t = 170, 22
    height = pad_t + row_height * max(len(rows), 1) + 8
    body = [f'<text x="4" y="14" class="t">{escape(title)}</text>']
    top = max([sum(parts.values()) for _, _, parts in rows] + [1])
    plot_w = width - label_w - 130
    for i, (name, samples, parts) in enumerate(rows):
        y = pad_t + i * row_height
        short = name if len(name) <= 24 else name[:23] + "\u2026"
        body.append(f'<text x="{label_w - 6}" y="{y + 15}" class="a" text-anchor="end">{escape(short)}</text>')
        x = float(label_w)
        for status, colour in STATUS_COLOURS.items():
            n = parts.get(status, 0)
            if not n:
                continue
            w = plot_w * n / top
            body.append(
                f'<rect x="{x:.1f}" y="{y + 3}" width="{w:.1f}" height="{row_height - 6}" fill="{colour}">'
                f"<title>{escape(name)}: {n} {status}</title></rect>"
            )
            x += w
        total = sum(parts.values())
        share = f" ({total / samples:.1%} of {samples})" if samples else ""
        body.append(f'<text x="{x + 4:.1f}" y="{y + 15}" class="a">{total}{share}</text>')
    return _svg(width, height, title, body)


def scatter(
    points: np.ndarray,
    categories: Sequence[str],
    *,
    title: str,
    colours: dict[str, str] | None = None,
    width: int = 560,
    height: int = 420,
    chart_id: str | None = None,
) -> Markup:
    """Points ``(n, 2)`` coloured by category, drawn in the order of ``colours`` (default: a status
    from ``STATUS_COLOURS``, kept ones first and smaller), with a legend.

    With ``chart_id`` the SVG carries its plot box (``data-box``: left, top, width, height in SVG
    units) and the data range it maps (``data-range``: x low, x high, y low, y high), so the page can
    turn a rectangle drawn on it back into the points' coordinates.
    """
    palette = colours or STATUS_COLOURS
    pts = np.asarray(points, dtype=np.float64)
    cats = np.asarray(categories)
    pad, pad_t = 10, 22
    body = [f'<text x="{pad}" y="14" class="t">{escape(title)}</text>']
    if len(pts) == 0:
        return _svg(width, height, title, body)
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    span = np.where(hi - lo < 1e-12, 1.0, hi - lo)
    legend_w = 130
    plot_w, plot_h = width - 2 * pad - legend_w, height - pad_t - pad
    xy = (pts - lo) / span
    xs = pad + xy[:, 0] * plot_w
    ys = pad_t + (1 - xy[:, 1]) * plot_h
    for k, (name, colour) in enumerate(palette.items()):
        idx = np.flatnonzero(cats == name)
        if not len(idx):
            continue
        r = 1.8 if colours is None and name == "kept" else 3.0 if colours is None else 2.2
        dots = "".join(f'<circle cx="{xs[i]:.1f}" cy="{ys[i]:.1f}" r="{r}"/>' for i in idx)
        label = escape(name)
        body.append(
            f'<g fill="{colour}" class="s-{k}" data-category="{label}"><title>{len(idx)} {label}</title>{dots}</g>'
        )
    for k, (name, colour) in enumerate(list(palette.items())[:20]):
        y = pad_t + 8 + 18 * k
        n = int((cats == name).sum())
        short = name if len(name) <= 14 else name[:13] + "\u2026"
        body.append(f'<circle cx="{width - legend_w + 6}" cy="{y}" r="5" fill="{colour}"/>')
        body.append(f'<text x="{width - legend_w + 16}" y="{y + 4}" class="a">{escape(short)} ({n})</text>')
    attrs = ""
    if chart_id:
        # The y axis points up on the page: the box's top is the range's high end.
        real_hi = lo + span
        attrs = (
            f' id="{escape(chart_id)}" data-box="{pad} {pad_t} {plot_w} {plot_h}" '
            f'data-range="{float(lo[0])!r} {float(real_hi[0])!r} {float(lo[1])!r} {float(real_hi[1])!r}"'
        )
    return _svg(width, height, title, body, attrs)
