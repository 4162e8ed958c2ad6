"""A pilot written the upstream PiCaS way, unchanged except for its imports' home.

It claims tokens from the Monitor/todo view, runs each token's ``input``
as a shell command, records the exit code, closes the token and attaches
the command's output. Connection from the environment: PICAS_URL,
PICAS_DATABASE, PICAS_USERNAME, PICAS_PASSWORD.

    python examples/local_example.py
"""
import os
import time

from picas.actors import RunActor
from picas.clients import CouchDB
from picas.executers import execute
from picas.iterators import TaskViewIterator
from picas.modifiers import BasicTokenModifier
from picas.util import Timer


class ExampleActor(RunActor):
    """Runs ``token['input']`` through the shell."""

    def __init__(self, db, modifier, view="todo", **view_params):
        super().__init__(db, view=view, **view_params)
        self.timer = Timer()
        self.iterator = TaskViewIterator(self.db, view, **view_params)
        self.modifier = modifier
        self.client = db

    def process_task(self, token):
        print(f"-----------------------\nWorking on token: {token['_id']}")
        out = execute(token["input"], shell=True)
        self.subprocess = out[0]
        token["exit_code"] = out[1]
        token = self.modifier.close(token)
        stamp = time.strftime("%Y-%m-%d_%H:%M:%S")
        token.put_attachment(f"logs_{token['_id']}.out", out[2])
        token.put_attachment(f"logs_{token['_id']}.err", out[3])
        token["output"] = {"finished": stamp}
        print(f"exit code {out[1]}")


def main() -> None:
    client = CouchDB(url=os.environ.get("PICAS_URL", "http://127.0.0.1:5984"),
                     db=os.environ.get("PICAS_DATABASE", "picas"),
                     username=os.environ.get("PICAS_USERNAME"),
                     password=os.environ.get("PICAS_PASSWORD", ""))
    actor = ExampleActor(client, BasicTokenModifier())
    actor.run(max_token_time=1800, max_total_time=3600, max_tasks=1000, max_scrub=2)


if __name__ == "__main__":
    main()
