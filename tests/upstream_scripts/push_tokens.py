"""Tokens for the quick example (one per line of quickExample.txt) or the autopilot one."""
import argparse

import picasconfig
from picas.clients import CouchDB
from create_tokens import create_tokens

parser = argparse.ArgumentParser()
parser.add_argument('example', nargs='?', choices=['quick', 'autopilot'], default='quick')
example = parser.parse_args().example

db = CouchDB(url=picasconfig.PICAS_HOST_URL, db=picasconfig.PICAS_DATABASE,
             username=picasconfig.PICAS_USERNAME, password=picasconfig.PICAS_PASSWORD)
if example == 'quick':
    with open('quickExample.txt') as f:
        tokens = create_tokens({'input': f.read().splitlines()}, offset=db.doc_count())
else:
    tokens = create_tokens({'cores': [1, 1, 4]}, offset=db.doc_count())
    for token in tokens:
        token.input = 'echo $SLURM_CPUS_PER_TASK'
db.save_documents(tokens)
