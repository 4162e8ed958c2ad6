"""``picas report``: one HTML file to look at, with charts drawn as inline SVG.

It needs nothing but a browser, offline: no scripts from elsewhere, no
plotting library. The data comes from views (``Monitor/attempts``, the
error groups and the counts per state), not from reading every token.
"""
from __future__ import annotations

import html
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from . import designdocs, overview, triage
from .database import Database

SLOWEST = 15
BINS = 30
GOOD, BAD, NEUTRAL, INK = "#2e7d32", "#c62828", "#1565c0", "#333"
WIDTH, HEIGHT = 560, 220
MARGIN_LEFT, MARGIN_BOTTOM = 56, 36


@dataclass
class Attempt:
    token: str
    end: float
    duration: float | None
    rss_kib: int | None
    host: str
    outcome: str
    signature: str
    cpu_s: float | None


@dataclass
class ReportData:
    database: str
    counts: dict[str, int]
    attempts: list[Attempt] = field(default_factory=list)
    groups: list[triage.ErrorGroup] = field(default_factory=list)
    made: float = field(default_factory=time.time)


def gather(db: Database) -> ReportData:
    """Everything the report shows, from views."""
    data = ReportData(db.name, overview.counts(db))
    for row in db.iter_view(designdocs.MONITOR, "attempts", page=5000):
        duration, rss, host, outcome, sig, cpu = row["value"]
        data.attempts.append(Attempt(row["id"], float(row["key"] or 0), duration, rss,
                                     host or "(unknown)", outcome, sig, cpu))
    if data.counts.get("error"):
        data.groups = triage.error_groups(db)
    return data


# -- drawing --------------------------------------------------------------------------

def _fmt(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.0f}"
    return f"{value:.2g}"


def _svg(title: str, body: Iterable[str], height: int = HEIGHT) -> str:
    return (f'<svg class="chart" role="img" aria-label="{html.escape(title)}" '
            f'xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
            f'viewBox="0 0 {WIDTH} {height}"><title>{html.escape(title)}</title>'
            + "".join(body) + "</svg>")


def _axes(y_max: float, x_labels: Sequence[tuple[float, str]], y_label: str) -> list[str]:
    """The frame, y ticks at quarters of ``y_max`` and the given x labels."""
    plot_h = HEIGHT - MARGIN_BOTTOM - 10
    parts = [f'<line x1="{MARGIN_LEFT}" y1="10" x2="{MARGIN_LEFT}" y2="{10 + plot_h}" '
             f'stroke="{INK}"/>',
             f'<line x1="{MARGIN_LEFT}" y1="{10 + plot_h}" x2="{WIDTH - 10}" '
             f'y2="{10 + plot_h}" stroke="{INK}"/>',
             f'<text x="12" y="{10 + plot_h / 2}" font-size="11" fill="{INK}" '
             f'transform="rotate(-90 12 {10 + plot_h / 2})" text-anchor="middle">'
             f'{html.escape(y_label)}</text>']
    for i in range(1, 5):
        y = 10 + plot_h - plot_h * i / 4
        parts.append(f'<line x1="{MARGIN_LEFT - 4}" y1="{y:.1f}" x2="{WIDTH - 10}" y2="{y:.1f}" '
                     'stroke="#ddd"/>')
        parts.append(f'<text x="{MARGIN_LEFT - 6}" y="{y + 4:.1f}" font-size="10" '
                     f'text-anchor="end" fill="{INK}">{_fmt(y_max * i / 4)}</text>')
    for x, label in x_labels:
        parts.append(f'<text x="{x:.1f}" y="{HEIGHT - MARGIN_BOTTOM + 24}" font-size="10" '
                     f'text-anchor="middle" fill="{INK}">{html.escape(label)}</text>')
    return parts


def stacked_bars(title: str, series: Sequence[tuple[str, str, Sequence[float]]],
                 x_labels: Sequence[str], y_label: str) -> str:
    """Vertical bars, one per x, stacked by series ``(name, colour, values)``."""
    n = len(x_labels)
    if n == 0:
        return _empty(title)
    totals = [sum(values[i] for _, _, values in series) for i in range(n)]
    y_max = _nice(max(totals) or 1)
    plot_w = WIDTH - MARGIN_LEFT - 20
    plot_h = HEIGHT - MARGIN_BOTTOM - 10
    step = plot_w / n
    every = max(1, math.ceil(n / 6))
    parts = _axes(y_max, [(MARGIN_LEFT + step * (i + 0.5), x_labels[i])
                          for i in range(0, n, every)], y_label)
    for i in range(n):
        base: float = 10 + plot_h
        for name, colour, values in series:
            h = plot_h * values[i] / y_max
            if h <= 0:
                continue
            base -= h
            parts.append(f'<rect class="bar" x="{MARGIN_LEFT + step * i + 1:.1f}" '
                         f'y="{base:.1f}" width="{max(step - 2, 1):.1f}" height="{h:.1f}" '
                         f'fill="{colour}"><title>{html.escape(x_labels[i])}: '
                         f'{_fmt(values[i])} {html.escape(name)}</title></rect>')
    parts.extend(_legend([(name, colour) for name, colour, _ in series]))
    return _svg(title, parts)


def horizontal_bars(title: str, rows: Sequence[tuple[str, float, float]],
                    unit: str = "") -> str:
    """One bar per row ``(label, bad part, good part)``: failures in red, the rest in green."""
    if not rows:
        return _empty(title)
    bar_h, label_w = 20, 190
    height = 16 + bar_h * len(rows) + 24
    top = max(bad + good for _, bad, good in rows) or 1
    width = WIDTH - label_w - 70
    parts = []
    for i, (label, bad, good) in enumerate(rows):
        y = 10 + i * bar_h
        parts.append(f'<text x="{label_w - 6}" y="{y + 14}" font-size="11" text-anchor="end" '
                     f'fill="{INK}">{html.escape(_clip(label, 30))}<title>{html.escape(label)}'
                     '</title></text>')
        x: float = label_w
        for value, colour in ((bad, BAD), (good, GOOD)):
            w = width * value / top
            if w > 0:
                parts.append(f'<rect class="bar" x="{x:.1f}" y="{y + 3}" width="{w:.1f}" '
                             f'height="{bar_h - 6}" fill="{colour}"/>')
                x += w
        share = f" ({bad / (bad + good):.0%})" if good else ""
        parts.append(f'<text x="{x + 4:.1f}" y="{y + 14}" font-size="10" fill="{INK}">'
                     f'{_fmt(bad)}{unit}{share}</text>')
    return _svg(title, parts, height)


def histogram(title: str, values: Sequence[float], x_label: str, colour: str = NEUTRAL) -> str:
    """Counts of ``values`` in BINS equal bins from 0 to the largest."""
    if not values:
        return _empty(title)
    top = max(values) or 1.0
    counts = [0] * BINS
    for value in values:
        counts[min(int(value / top * BINS), BINS - 1)] += 1
    labels = [_fmt(top * i / BINS) for i in range(BINS)]
    return stacked_bars(title, [("attempts", colour, counts)], labels,
                        f"attempts per bin of {x_label}")


def _legend(entries: Sequence[tuple[str, str]]) -> list[str]:
    parts = []
    for i, (name, colour) in enumerate(entries):
        x = WIDTH - 130
        y = 14 + i * 14
        parts.append(f'<rect x="{x}" y="{y - 9}" width="10" height="10" fill="{colour}"/>'
                     f'<text x="{x + 14}" y="{y}" font-size="10" fill="{INK}">'
                     f'{html.escape(name)}</text>')
    return parts


def _empty(title: str) -> str:
    return _svg(title, [f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle" '
                        f'font-size="12" fill="#888">nothing to show yet</text>'])


def _nice(value: float) -> float:
    """The smallest 1, 2 or 5 times a power of ten that is at least ``value``."""
    power = 10 ** math.floor(math.log10(value))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= value)


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"


# -- the page -------------------------------------------------------------------------

def throughput(attempts: Sequence[Attempt]) -> str:
    ended = [a for a in attempts if a.end > 0 and a.outcome != "cancelled"]
    if not ended:
        return _empty("Throughput")
    first, last = min(a.end for a in ended), max(a.end for a in ended)
    span = max(last - first, 1.0)
    bins = min(BINS, max(1, int(span)))
    width = span / bins
    good, bad = [0] * bins, [0] * bins
    for a in ended:
        i = min(int((a.end - first) / width), bins - 1)
        (good if a.outcome == "succeeded" else bad)[i] += 1
    labels = [_clock(first + width * i) for i in range(bins)]
    return stacked_bars(f"Throughput: attempts finished per {_fmt(width)} s",
                        [("succeeded", GOOD, good), ("failed or lost", BAD, bad)], labels,
                        f"attempts per {_fmt(width)} s")


def _clock(epoch: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(epoch))


def failures_by_host(attempts: Sequence[Attempt]) -> str:
    per_host: dict[str, list[int]] = {}
    for a in attempts:
        counts = per_host.setdefault(a.host, [0, 0])
        counts[0 if a.outcome not in ("succeeded", "cancelled") else 1] += 1
    rows = sorted(((host, bad, good) for host, (bad, good) in per_host.items()),
                  key=lambda r: (-r[1], r[0]))[:20]
    return horizontal_bars("Failed attempts by host (red), next to the rest (green)", rows)


def failures_by_signature(groups: Sequence[triage.ErrorGroup]) -> str:
    rows = [(f"[{g.exit_code}] {g.signature or '(no signature)'}", g.count, 0)
            for g in groups[:15]]
    return horizontal_bars("Error tokens by exit code and signature", rows)


def slowest(attempts: Sequence[Attempt]) -> str:
    ranked = sorted((a for a in attempts if a.duration is not None),
                    key=lambda a: -(a.duration or 0))[:SLOWEST]
    if not ranked:
        return "<p>nothing has run yet</p>"
    rows = "".join(
        f"<tr><td>{html.escape(a.token)}</td><td>{html.escape(a.host)}</td>"
        f"<td class=num>{a.duration:.1f}</td>"
        f"<td class=num>{'' if a.cpu_s is None else f'{a.cpu_s:.1f}'}</td>"
        f"<td class=num>{'' if a.rss_kib is None else f'{a.rss_kib / 1024:.0f}'}</td>"
        f"<td>{html.escape(a.outcome)}</td></tr>" for a in ranked)
    return ("<table><tr><th>token</th><th>host</th><th>wall s</th><th>CPU s</th>"
            f"<th>peak MiB</th><th>outcome</th></tr>{rows}</table>")


STYLE = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;background:#fafafa}
h1{font-size:22px;margin:0 0 4px} h2{font-size:15px;margin:18px 0 6px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(580px,1fr));gap:12px}
.card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:10px}
.counts span{display:inline-block;margin-right:16px;font-size:14px}
table{border-collapse:collapse;font-size:12px} td,th{padding:3px 8px;border-bottom:1px solid #eee;
text-align:left} td.num{text-align:right;font-variant-numeric:tabular-nums}
.meta{color:#666;font-size:12px}
"""


def render(data: ReportData) -> str:
    """The whole page, as one string."""
    done = [a for a in data.attempts if a.outcome == "succeeded"]
    runtimes = [a.duration for a in done if a.duration is not None]
    memory = [a.rss_kib / 1024 for a in data.attempts if a.rss_kib]
    counts = "".join(f"<span><b>{n}</b> {html.escape(name)}</span>"
                     for name, n in data.counts.items())
    cards = [
        ("Throughput over time", throughput(data.attempts)),
        ("Run time of successful attempts",
         histogram("Run time of successful attempts", runtimes, "seconds", GOOD)),
        ("Peak memory of attempts",
         histogram("Peak memory (RSS) of attempts", memory, "MiB")
         + (f"<p class=meta>A command starts as a copy of its pilot, so none shows less "
            f"than about the pilot's own size: here {min(memory):.0f} MiB.</p>"
            if memory else "")),
        ("Failures by host", failures_by_host(data.attempts)),
        ("Failures by signature", failures_by_signature(data.groups)),
        ("The slowest attempts", slowest(data.attempts)),
    ]
    body = "".join(f'<div class="card"><h2>{html.escape(title)}</h2>{content}</div>'
                   for title, content in cards)
    made = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(data.made))
    return (f"<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
            f"<title>picas report: {html.escape(data.database)}</title>"
            f"<style>{STYLE}</style></head><body>"
            f"<h1>picas report: {html.escape(data.database)}</h1>"
            f"<p class=meta>{len(data.attempts)} attempts; made {made} by picas report</p>"
            f'<p class=counts>{counts}</p><div class="grid">{body}</div></body></html>')
