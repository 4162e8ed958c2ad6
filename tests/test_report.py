"""`picas report`: one self-contained HTML file whose charts render in a browser.

The file is opened in Debian's headless Chromium, which takes a screenshot
(kept in tests/artifacts/report.png); the pixels of each chart's colours
show that the SVG charts were drawn.
"""
from __future__ import annotations

import re
import struct
import sys
import zlib
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import ARTIFACTS
from pilots import add, run_pilot, tokens
from test_fauxton import browse, chromium

from picas import report
from picas.cli import cli

HUNGRY = f"{sys.executable} -c \"b = bytearray(40 << 20)\""


@pytest.fixture
def pool(db, pilot_env, tmp_path) -> dict:
    """A pool that ran on three hosts: quick, slow, hungry and failing tokens."""
    add(db, tokens({f"quick-{i}": "true" for i in range(12)}))
    add(db, tokens({f"slow-{i}": f"sleep 0.{i + 3}" for i in range(4)}))
    add(db, tokens({f"hungry-{i}": HUNGRY for i in range(2)}))
    add(db, tokens({f"broken-{i}": f"echo 'no such frame {i}' >&2; exit 2" for i in range(3)},
                   max_attempts=1))
    for host in ("node-a", "node-b", "node-c"):
        run_pilot(pilot_env, "--host", host, "--max-tasks", "8", workdir=tmp_path / host)
    run_pilot(pilot_env, "--host", "node-a", workdir=tmp_path / "last")
    return pilot_env


def _write_report(env: dict, path: Path) -> str:
    result = CliRunner().invoke(cli, ["report", "-o", str(path)], env=env)
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"wrote {path} (21 attempts of 21 tokens)")
    return path.read_text()


def test_the_report_is_one_file_with_every_chart_and_nothing_from_elsewhere(pool, tmp_path):
    page = _write_report(pool, tmp_path / "report.html")
    assert page.count('<svg class="chart"') == 5
    assert not re.search(r"(src|href)\s*=|<script|@import|url\(", page)
    assert "nothing to show yet" not in page
    for title in ("Throughput", "Run time of successful attempts", "Peak memory",
                  "Failed attempts by host", "Error tokens by exit code and signature"):
        assert title in page
    assert "[2] no such frame &lt;n&gt;" in page  # the failures' signature, escaped
    slow_table = page.split("The slowest attempts")[1]
    assert slow_table.index("slow-3") < slow_table.index("slow-2")


def test_an_empty_pool_gives_a_report_that_says_so(db, pilot_env, tmp_path):
    result = CliRunner().invoke(cli, ["report", "-o", str(tmp_path / "r.html")], env=pilot_env)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "r.html").read_text().count("nothing to show yet") == 5


def test_the_y_axis_ends_at_a_round_number():
    assert [report._nice(v) for v in (0.7, 1, 3, 7, 12, 480)] == [1, 1, 5, 10, 20, 500]


def _pixels(path: Path) -> list[tuple[int, int, int]]:
    """The RGB pixels of an 8-bit, non-interlaced PNG (as Chromium writes them)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", chunk)
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    width, height, depth, colour, _, _, interlace = header
    assert depth == 8 and interlace == 0 and colour in (2, 6)
    size = 3 if colour == 2 else 4
    raw, stride = zlib.decompress(idat), width * size
    previous = bytearray(stride)
    pixels = []
    for row in range(height):
        kind, line = raw[row * (stride + 1)], bytearray(raw[row * (stride + 1) + 1:
                                                            (row + 1) * (stride + 1)])
        for i in range(stride):
            left = line[i - size] if i >= size else 0
            up, corner = previous[i], previous[i - size] if i >= size else 0
            if kind == 1:
                line[i] = (line[i] + left) & 255
            elif kind == 2:
                line[i] = (line[i] + up) & 255
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 255
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                line[i] = (line[i] + (left if pa <= pb and pa <= pc else
                                      up if pb <= pc else corner)) & 255
        pixels.extend(tuple(line[i:i + 3]) for i in range(0, stride, size))
        previous = line
    return pixels


@pytest.mark.chromium
def test_the_charts_render_in_headless_chromium(pool, tmp_path):
    binary = chromium()
    page = tmp_path / "report.html"
    _write_report(pool, page)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "report.png"
    shot.unlink(missing_ok=True)
    browse(binary, page.as_uri(), tmp_path, f"--screenshot={shot}", "--window-size=1400,1300")
    assert shot.exists(), "chromium wrote no screenshot"
    colours = {name: tuple(int(value[i:i + 2], 16) for i in (1, 3, 5))
               for name, value in (("good", report.GOOD), ("bad", report.BAD),
                                   ("neutral", report.NEUTRAL))}
    counts = dict.fromkeys(colours, 0)
    for pixel in _pixels(shot):
        for name, colour in colours.items():
            if all(abs(a - b) <= 8 for a, b in zip(pixel, colour, strict=False)):
                counts[name] += 1
    # every colour covers a few hundred pixels at least: the bars were drawn
    assert min(counts.values()) > 300, counts
