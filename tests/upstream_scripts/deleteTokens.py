"""usage: python deleteTokens.py VIEW: deletes every token in VIEW."""
import sys

import couchdb
import picasconfig

server = couchdb.Server(picasconfig.PICAS_HOST_URL)
server.resource.credentials = (picasconfig.PICAS_USERNAME, picasconfig.PICAS_PASSWORD)
db = server[picasconfig.PICAS_DATABASE]
for row in db.view(sys.argv[1]):
    db.delete(db[row['key']])
