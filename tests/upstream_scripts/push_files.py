"""Tutorial 03's steps: one token per text file under DATA_DIR, then the todo count."""
import glob
import sys

from picas.picas_config import PicasConfig
from picas.crypto import decrypt_password
from picas.clients import CouchDB
from create_tokens import create_tokens

config = PicasConfig(load=True)
print(config)
db = CouchDB(url=config.config['host_url'], db=config.config['database'],
             username=config.config['username'],
             password=decrypt_password(config.config['encrypted_password']).decode())
fields = {"input": sorted(glob.iglob(f"{sys.argv[1]}/**/*.txt", recursive=True))}
status = db.save_documents(create_tokens(fields, offset=db.doc_count()))
if not any(status):
    sys.exit(f"Error saving tokens: {status}")
print(f"Number of documents in the todo view: {db.db.view('Monitor/todo').total_rows}")
