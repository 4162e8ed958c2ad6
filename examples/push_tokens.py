"""Create tokens the way upstream PiCaS scripts do: Task objects, saved in bulk.

Each line of the input file becomes one token whose ``input`` is that line
(a shell command, for local_example.py). Connection from the environment:
PICAS_URL, PICAS_DATABASE, PICAS_USERNAME, PICAS_PASSWORD.

    python examples/push_tokens.py examples/quick-tasks.txt
"""
import os
import sys

from picas.clients import CouchDB
from picas.documents import Task


def main(path: str) -> None:
    client = CouchDB(url=os.environ.get("PICAS_URL", "http://127.0.0.1:5984"),
                     db=os.environ.get("PICAS_DATABASE", "picas"),
                     username=os.environ.get("PICAS_USERNAME"),
                     password=os.environ.get("PICAS_PASSWORD", ""))
    with open(path) as handle:
        lines = [line.strip() for line in handle if line.strip() and not line.startswith("#")]
    tasks = [Task({"input": line}) for line in lines]
    saved = client.save_documents(tasks)
    print(f"added {sum(saved)} of {len(tasks)} tokens")


if __name__ == "__main__":
    main(sys.argv[1])
