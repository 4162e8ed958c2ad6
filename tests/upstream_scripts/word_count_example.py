"""Counts the words of the file named by each token, and attaches the count."""
from picas.picas_config import PicasConfig
from picas.crypto import decrypt_password
from picas.clients import CouchDB
from picas.actors import RunActor
from picas.modifiers import BasicTokenModifier
from picas.util import Timer

config = PicasConfig(load=True)
db = CouchDB(url=config.config['host_url'], db=config.config['database'],
             username=config.config['username'],
             password=decrypt_password(config.config['encrypted_password']).decode())


class ExampleActor(RunActor):
    def __init__(self, db, modifier, view="todo", **viewargs):
        super(ExampleActor, self).__init__(db, view=view, **viewargs)
        self.timer = Timer()
        self.modifier = modifier
        self.client = db

    def process_task(self, token):
        print("Working on token: " + token['_id'])
        with open(token['input'], 'r') as fobj:
            word_count = len(fobj.read().split())
        self.subprocess = None
        token['exit_code'] = 0
        token = self.modifier.close(token)
        token.put_attachment('word_count', f'{word_count}\n')


actor = ExampleActor(db, BasicTokenModifier(), view='todo', design_doc='Monitor')
actor.run(max_token_time=1800, max_total_time=3600, max_tasks=100000, max_scrub=2)
