"""Runs each todo token's input with process_task.sh, closes it, attaches the logs."""
import argparse

import picasconfig
from picas.actors import RunActor
from picas.clients import CouchDB
from picas.executers import execute
from picas.modifiers import BasicTokenModifier
from picas.util import Timer


class ExampleActor(RunActor):
    def __init__(self, db, modifier, view="todo", **viewargs):
        super(ExampleActor, self).__init__(db, view=view, **viewargs)
        self.timer = Timer()
        self.modifier = modifier
        self.client = db

    def process_task(self, token):
        print(f"Working on token {token['_id']}")
        for key, value in token.doc.items():
            print(key, value)
        out = execute(["/usr/bin/time", "./process_task.sh", token['input'], token['_id']])
        logsout, logserr = f"logs_{token['_id']}.out", f"logs_{token['_id']}.err"
        with open(logsout, 'w') as fobj:
            fobj.write(out[2].decode('utf-8'))
        with open(logserr, 'w') as fobj:
            fobj.write(out[3].decode('utf-8'))
        self.subprocess = out[0]
        token['exit_code'] = out[1]
        token = self.modifier.close(token)
        token.put_attachment(logsout, open(logsout, 'rb').read())
        token.put_attachment(logserr, open(logserr, 'rb').read())


if __name__ == '__main__':
    parser = argparse.ArgumentParser()
    parser.add_argument("--design_doc", default="Monitor")
    parser.add_argument("--view", default="todo")
    args = parser.parse_args()
    client = CouchDB(url=picasconfig.PICAS_HOST_URL, db=picasconfig.PICAS_DATABASE,
                     username=picasconfig.PICAS_USERNAME, password=picasconfig.PICAS_PASSWORD)
    actor = ExampleActor(client, BasicTokenModifier(), view=args.view, design_doc=args.design_doc)
    actor.run(max_token_time=1800, max_total_time=3600, max_tasks=10, max_scrub=2)
