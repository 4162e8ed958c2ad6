#!/usr/bin/env python3
"""Figures of a long drain from its pilots' logs (``picas -vv pilot``):

    .venv/bin/python bench/drainlog.py LOG... [--samples S.jsonl] [--json OUT] [--plot PNG]

Every claim a pilot logs at ``-vv`` gives its time, size and latency. From
them: tokens/s over time (1-minute bins), the total time, and the claim
latency (median, 99th percentile) over the first and the last tenth of
the tokens, so that a cost that grows as the pool drains shows. With
``--samples`` (lines of {"t", "claimed", "server_cpu", "load"} taken while
it ran), also the server's CPU per token and the machine's load.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
from pathlib import Path

import envs
from million import CLAIM

HERE = Path(__file__).resolve().parent


def claims(logs: list[Path]) -> list[tuple[float, int, float]]:
    found = []
    for log in logs:
        found += [(float(m[1]), int(m[2]), float(m[4])) for m in CLAIM.finditer(log.read_text())]
    return sorted(c for c in found if c[1])


def _latency(part: list[tuple[float, int, float]]) -> dict:
    ms = sorted(c[2] for c in part)
    return {"claims": len(ms), "tokens": sum(c[1] for c in part),
            "median_ms": round(statistics.median(ms), 1),
            "p99_ms": round(ms[int(0.99 * (len(ms) - 1))], 1),
            "tokens_per_claim": round(sum(c[1] for c in part) / len(ms), 1)}


def summary(found: list[tuple[float, int, float]], samples: list[dict]) -> dict:
    total = sum(c[1] for c in found)
    start, end = found[0][0], found[-1][0]
    tenth, seen, first, last = total / 10, 0, [], []
    for c in found:
        seen += c[1]
        if seen <= tenth:
            first.append(c)
        if seen > total - tenth:
            last.append(c)
    bins: dict[int, int] = {}
    for at, tokens, _ in found:
        bins[int((at - start) // 60)] = bins.get(int((at - start) // 60), 0) + tokens
    result = {"tokens": total, "seconds": round(end - start, 1),
              "tokens_per_s": round(total / (end - start), 1),
              "first_tenth": _latency(first), "last_tenth": _latency(last),
              "series": [(k * 60, v / 60) for k, v in sorted(bins.items())]}
    if len(samples) > 1:
        cpu = samples[-1]["server_cpu"] - samples[0]["server_cpu"]
        tokens = samples[-1]["claimed"] - samples[0]["claimed"]
        loads = [s["load"] for s in samples]
        result["server_cpu_ms_per_token"] = round(1000 * cpu / tokens, 2) if tokens else None
        result["load_average"] = {"mean": round(statistics.mean(loads), 1),
                                  "max": round(max(loads), 1)}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("logs", nargs="+", type=Path)
    parser.add_argument("--samples", type=Path)
    parser.add_argument("--title", default="a drain")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--plot", type=Path)
    args = parser.parse_args()
    samples = [json.loads(line) for line in args.samples.read_text().splitlines()
               if '"claimed"' in line] if args.samples else []
    result = summary(claims(args.logs), samples)
    print(json.dumps({k: v for k, v in result.items() if k != "series"}, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    if args.plot:
        data = args.plot.with_suffix(".series.json")
        series = {"all pilots": result["series"]}
        data.write_text(json.dumps({"title": args.title, "series": series}))
        python = envs.plot_python(args.plot.with_suffix(".venv.log"))
        subprocess.run([str(python), str(HERE / "plot_million.py"), str(data), str(args.plot)],
                       check=True)
        data.unlink()


if __name__ == "__main__":
    main()
