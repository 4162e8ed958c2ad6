"""A pilot in upstream PiCaS's documented pattern, on this project's picas.

The same actor as ``upstream_actor.py`` (``example_actor.py``); only the
counting differs, which picas does itself: ``client.transport.request_count``
counts every HTTP request sent, and the iterator counts the conflicts of its
claims.

Connection settings come from PICAS_URL, PICAS_DATABASE, PICAS_USERNAME and
PICAS_PASSWORD; the token's command reads its id from PICAS_TOKEN_ID, set
here before running it, as in the upstream script. One JSON line goes to
stdout at the end.
"""
import json
import os
import sys
import time

from example_actor import ExampleActor

import picas
from picas.clients import CouchDB
from picas.modifiers import BasicTokenModifier


def main() -> int:
    started = time.monotonic()
    client = CouchDB(url=os.environ["PICAS_URL"], db=os.environ["PICAS_DATABASE"],
                     username=os.environ["PICAS_USERNAME"], password=os.environ["PICAS_PASSWORD"])
    actor = ExampleActor(client, BasicTokenModifier())
    actor.run()
    print(json.dumps({"implementation": "ours_actor", "picas": os.path.dirname(picas.__file__),
                      "processed": actor.tasks_processed,
                      "requests": client.transport.request_count,
                      "conflicts": actor.iterator.conflicts, "failure": "",
                      "seconds": round(time.monotonic() - started, 3)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
