"""Draw tokens/s against pilot processes from a results file of bench/run.

Runs in the benchmark's plot venv (matplotlib), not in the project's:
``plot.py RESULTS.json OUT.png``.
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

STYLE = {"ours_pilot": ("picas pilot", "tab:blue", "o"),
         "ours_actor": ("picas RunActor", "tab:green", "s"),
         "upstream": ("upstream PiCaS 1.1.2", "tab:red", "^")}


def main(source: str, target: str) -> None:
    with open(source) as f:
        results = json.load(f)
    counts = sorted(results["pilots"], key=int)
    fig, ax = plt.subplots(figsize=(9, 4.5), dpi=120)
    for impl, (label, color, marker) in STYLE.items():
        xs = [int(p) for p in counts if impl in results["pilots"][p]["tokens_per_s"]]
        if not xs:
            continue
        rows = [results["pilots"][str(x)] for x in xs]
        medians = [row["tokens_per_s"][impl] for row in rows]
        reps = [row["tokens_per_s_per_rep"][impl] for row in rows]
        low = [m - min(r) for m, r in zip(medians, reps, strict=True)]
        high = [max(r) - m for m, r in zip(medians, reps, strict=True)]
        ax.errorbar(xs, medians, yerr=[low, high], label=label, color=color, marker=marker,
                    capsize=3)
    limit = results["server_limit"]["server_limit_tokens_per_s"]
    ax.axhline(limit, color="grey", linestyle="--",
               label=f"server limit ({limit:.0f}/s: _bulk_docs rate / 2)")
    ax.set_xscale("log", base=2)
    ax.set_xticks([int(p) for p in counts], [str(p) for p in counts])
    ax.set_yscale("log")
    ax.set_xlabel("pilot processes")
    ax.set_ylabel("tokens/s (median, bars: min-max)")
    config = results["config"]
    server = str(config.get("server", "pouchdb-server --in-memory")).split(" at ")[0]
    ax.set_title(f"Draining {config['n']} trivial tokens, {server}, "
                 f"{results['machine']['cores']} cores", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    # Beside the axes, where no line can run under it.
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(target)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
