"""Plots and report files of the evaluate stage: inline SVG charts, report.md, a self-contained report.html,
and the DVC plot data files (CSV) that `dvc plots show/diff` renders.

No plotting library: the charts are small hand-written SVGs (grouped bars, a confusion-matrix heatmap,
a line chart), so the stage stays fast and dependency-free. report.html holds every chart inline and
needs no network or other file; report.md embeds the same charts as base64 `data:` images.
"""

import base64
import csv
import html
import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "PALETTE",
    "bar_chart_svg",
    "confusion_svg",
    "line_chart_svg",
    "markdown_table",
    "render_html",
    "render_markdown",
    "svg_data_uri",
    "write_csv",
]

PALETTE = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860"]


def _esc(v: Any) -> str:
    return html.escape(str(v), quote=True)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "n/a" if math.isnan(v) else f"{v:.3f}"
    return str(v)


def _svg_frame(title: str, width: float, height: float) -> list[str]:
    """The opening tag, white background and centred title every chart starts with."""
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{_esc(title)}">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{width / 2}" y="20" text-anchor="middle" font-size="14" font-family="sans-serif">'
        f"{_esc(title)}</text>",
    ]


def bar_chart_svg(
    title: str,
    categories: Sequence[str],
    series: Mapping[str, Sequence[float]],
    y_max: float = 1.0,
    width: int = 560,
    height: int = 300,
) -> str:
    """Grouped vertical bars: one group per category, one bar per series (values in [0, y_max])."""
    left, right, top, bottom = 46, 12, 34, 58
    plot_w, plot_h = width - left - right, height - top - bottom
    names = list(series)
    n_groups = max(1, len(categories))
    group_w = plot_w / n_groups
    bar_w = group_w * 0.8 / max(1, len(names))
    parts = [
        *_svg_frame(title, width, height),
    ]
    for k in range(5):
        v = y_max * k / 4
        y = top + plot_h - plot_h * k / 4
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{width - right}" y2="{y:.1f}" stroke="#ddd"/>')
        parts.append(
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="10" '
            f'font-family="sans-serif">{v:.2f}</text>'
        )
    for g, cat in enumerate(categories):
        x0 = left + g * group_w + group_w * 0.1
        for s, name in enumerate(names):
            raw = series[name][g]
            v = 0.0 if raw is None or math.isnan(raw) else max(0.0, min(float(raw), y_max))
            h = plot_h * v / y_max if y_max else 0.0
            x = x0 + s * bar_w
            parts.append(
                f'<rect class="bar" x="{x:.1f}" y="{top + plot_h - h:.1f}" width="{bar_w * 0.92:.1f}" '
                f'height="{max(h, 0.5):.1f}" fill="{PALETTE[s % len(PALETTE)]}">'
                f"<title>{_esc(name)} / {_esc(cat)}: {_fmt(raw)}</title></rect>"
            )
        parts.append(
            f'<text x="{left + (g + 0.5) * group_w:.1f}" y="{top + plot_h + 16}" text-anchor="middle" '
            f'font-size="11" font-family="sans-serif">{_esc(cat)}</text>'
        )
    for s, name in enumerate(names):
        x = left + s * 110
        parts.append(
            f'<rect x="{x}" y="{height - 18}" width="10" height="10" fill="{PALETTE[s % len(PALETTE)]}"/>'
            f'<text x="{x + 14}" y="{height - 9}" font-size="11" font-family="sans-serif">{_esc(name)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def confusion_svg(
    title: str, row_labels: Sequence[str], col_labels: Sequence[str], counts: Sequence[Sequence[int]]
) -> str:
    """A confusion-matrix heatmap (rows gold, columns predicted), counts written in every cell."""
    cell = 44
    left, top = 110, 60
    width = left + cell * len(col_labels) + 20
    height = top + cell * len(row_labels) + 20
    peak = max((c for row in counts for c in row), default=0) or 1
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{_esc(title)}">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="8" y="18" font-size="14" font-family="sans-serif">{_esc(title)}</text>',
        f'<text x="{left}" y="36" font-size="10" font-family="sans-serif">predicted →</text>',
        f'<text x="8" y="{top - 6}" font-size="10" font-family="sans-serif">gold ↓</text>',
    ]
    for j, label in enumerate(col_labels):
        parts.append(
            f'<text x="{left + j * cell + cell / 2}" y="{top - 6}" text-anchor="middle" font-size="10" '
            f'font-family="sans-serif">{_esc(str(label)[:10])}</text>'
        )
    for i, label in enumerate(row_labels):
        y = top + i * cell
        parts.append(
            f'<text x="{left - 6}" y="{y + cell / 2 + 4}" text-anchor="end" font-size="10" '
            f'font-family="sans-serif">{_esc(str(label)[:16])}</text>'
        )
        for j, c in enumerate(counts[i]):
            shade = int(255 - 190 * c / peak)
            fill = f"rgb({shade},{shade},255)"
            ink = "white" if c / peak > 0.6 else "black"
            parts.append(
                f'<rect class="cell" x="{left + j * cell}" y="{y}" width="{cell}" height="{cell}" '
                f'fill="{fill}" stroke="white"/>'
                f'<text x="{left + j * cell + cell / 2}" y="{y + cell / 2 + 4}" '
                f'text-anchor="middle" font-size="12" fill="{ink}" font-family="sans-serif">{c}</text>'
            )
    parts.append("</svg>")
    return "".join(parts)


def line_chart_svg(
    title: str, xs: Sequence[float], ys: Sequence[float], x_label: str = "step", width: int = 560
) -> str:
    """A single line (e.g. the training loss per logged step); empty input gives an empty frame."""
    height = 260
    left, right, top, bottom = 52, 12, 34, 36
    plot_w, plot_h = width - left - right, height - top - bottom
    parts = [
        *_svg_frame(title, width, height),
        f'<text x="{left + plot_w / 2}" y="{height - 6}" text-anchor="middle" font-size="11" '
        f'font-family="sans-serif">{_esc(x_label)}</text>',
    ]
    points = [(float(x), float(y)) for x, y in zip(xs, ys, strict=True) if not math.isnan(float(y))]
    if points:
        x_lo, x_hi = min(p[0] for p in points), max(p[0] for p in points)
        y_lo, y_hi = min(p[1] for p in points), max(p[1] for p in points)
        x_span, y_span = (x_hi - x_lo) or 1.0, (y_hi - y_lo) or 1.0

        def px(x: float, y: float) -> str:
            return f"{left + plot_w * (x - x_lo) / x_span:.1f},{top + plot_h * (1 - (y - y_lo) / y_span):.1f}"

        for k in range(5):
            v = y_lo + y_span * k / 4
            y = top + plot_h - plot_h * k / 4
            parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{width - right}" y2="{y:.1f}" stroke="#ddd"/>')
            parts.append(
                f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="10" '
                f'font-family="sans-serif">{v:.3g}</text>'
            )
        parts.append(
            f'<polyline class="line" fill="none" stroke="{PALETTE[0]}" stroke-width="2" '
            f'points="{" ".join(px(x, y) for x, y in points)}"/>'
        )
    parts.append("</svg>")
    return "".join(parts)


def svg_data_uri(svg: str) -> str:
    """A base64 `data:image/svg+xml` URI of `svg` (for Markdown image links that need no other file)."""
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode("utf-8")).decode("ascii")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table; floats shown with 3 decimals, pipes and newlines escaped."""

    def cell(v: Any) -> str:
        return _fmt(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _html_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_esc(_fmt(v))}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


# A report is a list of sections; each holds paragraphs, tables and charts, rendered to both formats.
Section = Mapping[
    str, Any
]  # {"title": str, "blocks": [("p", text) | ("table", header, rows) | ("svg", svg)]}


def render_markdown(title: str, sections: Sequence[Section]) -> str:
    """report.md: the sections as Markdown; charts as base64 SVG images (no other file needed)."""
    parts = [f"# {title}"]
    for section in sections:
        parts.append(f"## {section['title']}")
        for block in section["blocks"]:
            if block[0] == "p":
                parts.append(block[1])
            elif block[0] == "table":
                parts.append(markdown_table(block[1], block[2]))
            elif block[0] == "svg":
                parts.append(f"![{block[2] if len(block) > 2 else 'chart'}]({svg_data_uri(block[1])})")
    return "\n\n".join(parts) + "\n"


CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1100px; color: #222; padding: 0 1em; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
.charts { display: flex; flex-wrap: wrap; gap: 16px; }
.charts svg { border: 1px solid #eee; }
"""


def render_html(title: str, sections: Sequence[Section]) -> str:
    """report.html: one self-contained page (inline CSS and SVG; no script, no external resource)."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_esc(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{_esc(title)}</h1>",
    ]
    for section in sections:
        parts.append(f"<section><h2>{_esc(section['title'])}</h2>")
        charts = [b[1] for b in section["blocks"] if b[0] == "svg"]
        for block in section["blocks"]:
            if block[0] == "p":
                parts.append(f"<p>{_esc(block[1])}</p>")
            elif block[0] == "table":
                parts.append(_html_table(block[1], block[2]))
        if charts:
            parts.append('<div class="charts">' + "".join(charts) + "</div>")
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_csv(rows: Sequence[Mapping[str, Any]], fieldnames: Sequence[str]) -> str:
    """CSV text of `rows` (the DVC plot data files are CSV with a header line)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(fieldnames), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: row.get(k) for k in fieldnames})
    return buf.getvalue()
