"""A three-stage workflow: split a file, sum each part, merge the sums.

The ``split`` token cuts ``numbers.txt`` into parts, one ``part-N`` token
per part sums it, and ``merge`` adds up their sums. The parts wait
(``after``) for the split, the merge for every part, so one ``picas
pilot`` runs them in that order and drains the database. Connection from
the environment: PICAS_URL, PICAS_DATABASE, PICAS_USERNAME, PICAS_PASSWORD.

    python examples/workflow.py [PARTS] [--folder DIR]
"""
import argparse
import json
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

NUMBERS = 1000


def tokens(folder: Path, parts: int) -> list[dict]:
    """The split, the parts and the merge, as ``picas tokens add`` reads them."""
    here = shlex.quote(str(folder))
    per_part = -(-NUMBERS // parts)
    split = {"_id": "split",
             "command": f"cd {here} && split -l {per_part} -d -a 3 numbers.txt chunk-"}
    part_ids = [f"part-{n}" for n in range(parts)]
    work = [{"_id": part, "after": ["split"],
             "command": f"cd {here} && awk '{{s += $1}} END {{print s}}' chunk-{n:03d} > sum-{n}"}
            for n, part in enumerate(part_ids)]
    merge = {"_id": "merge", "after": part_ids,
             "command": f"cd {here} && cat sum-* | awk '{{s += $1}} END {{print s}}' > total"}
    return [split, *work, merge]


def picas(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "picas", *args], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("parts", type=int, nargs="?", default=4)
    parser.add_argument("--folder", type=Path, help="where the files go [a new temporary one]")
    args = parser.parse_args()
    folder = (args.folder or Path(tempfile.mkdtemp(prefix="picas-workflow-"))).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "numbers.txt").write_text("".join(f"{n}\n" for n in range(1, NUMBERS + 1)))
    flow = folder / "workflow.jsonl"
    flow.write_text("".join(json.dumps(t) + "\n" for t in tokens(folder, args.parts)))
    picas("tokens", "add", str(flow))
    picas("pilot", "--workdir", str(folder / "pilot"))
    total = int((folder / "total").read_text())
    print(f"total {total} (expected {NUMBERS * (NUMBERS + 1) // 2}) in {folder}")


if __name__ == "__main__":
    main()
