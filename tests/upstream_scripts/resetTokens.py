"""usage: python resetTokens.py VIEW [HOURS]: tokens in VIEW locked longer than HOURS go back to todo."""
import sys
from time import time

import couchdb
import picasconfig


def resetDocs(db, viewname, locktime=0):
    to_update = []
    for row in db.view(viewname):
        document = db[row['key']]
        if time() - document['lock'] > locktime * 3600:
            document['lock'] = 0
            document['done'] = 0
            document['scrub_count'] += 1
            document['hostname'] = ''
            document['exit_code'] = ''
            if '_attachments' in document:
                del document['_attachments']
            to_update.append(document)
    db.update(to_update)
    print("Number of reset tokens: " + str(len(to_update)))


if __name__ == '__main__':
    server = couchdb.Server(picasconfig.PICAS_HOST_URL)
    server.resource.credentials = (picasconfig.PICAS_USERNAME, picasconfig.PICAS_PASSWORD)
    db = server[picasconfig.PICAS_DATABASE]
    if len(sys.argv) == 2:
        input("Press Enter to continue or Ctrl+C to cancel.")
    resetDocs(db, sys.argv[1], float(sys.argv[2]) if len(sys.argv) > 2 else 0)
