"""Draw tokens/s over time from bench/million.py's series:
``plot_million.py SERIES.json OUT.png`` (runs in the benchmark's plot venv,
which has matplotlib). SERIES.json: {"title": ..., "series": {label: [[s, tokens/s], ...]}}."""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def main(source: str, target: str) -> None:
    with open(source) as f:
        data = json.load(f)
    fig, ax = plt.subplots(figsize=(9, 4))
    for label, points in data["series"].items():
        ax.plot([p[0] / 60 for p in points], [p[1] for p in points], label=label)
    ax.set_xlabel("minutes")
    ax.set_ylabel("tokens claimed per second")
    ax.set_title(data["title"])
    ax.set_ylim(bottom=0)
    ax.legend()
    fig.tight_layout()
    fig.savefig(target, dpi=100)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
