"""Draw tokens/s over time at the start and the end of a million-token pool,
from bench/million.py's series: ``plot_million.py SERIES.json OUT.png``
(runs in the benchmark's plot venv, which has matplotlib)."""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def main(source: str, target: str) -> None:
    with open(source) as f:
        data = json.load(f)
    fig, ax = plt.subplots(figsize=(8, 4))
    for name, colour in (("start", "tab:blue"), ("end", "tab:orange")):
        ax.plot([p[0] for p in data[name]], [p[1] for p in data[name]], color=colour,
                label=f"{name} of the pool")
    ax.set_xlabel("seconds into the phase")
    ax.set_ylabel("tokens claimed per second (10 s bins)")
    ax.set_title(f"{data['pilots']} picas pilots, {data['n']:,} tokens, one CouchDB 3.5 node")
    ax.set_ylim(bottom=0)
    ax.legend()
    fig.tight_layout()
    fig.savefig(target, dpi=100)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
