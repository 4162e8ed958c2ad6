"""Monitor views (or SingleCore/MultiCore ones) with CouchDB-Python's ViewDefinition."""
import argparse

import couchdb
from couchdb.design import ViewDefinition

import picasconfig

STATES = {
    'todo': 'doc.lock == 0 && doc.done == 0',
    'locked': 'doc.lock > 0 && doc.done == 0',
    'done': 'doc.lock > 0 && doc.done > 0 && parseInt(doc.exit_code) == 0',
    'error': 'doc.lock > 0 && doc.done > 0 && parseInt(doc.exit_code) != 0',
}


def create_views(db, design_doc_name='Monitor', logic_appendix=''):
    conditions = {name: cond + logic_appendix for name, cond in STATES.items()}
    for name, cond in conditions.items():
        code = 'function(doc) { if (doc.type == "token" && (%s)) emit(doc._id, doc._id); }' % cond
        ViewDefinition(design_doc_name, name, code).sync(db)
    counts = ' '.join("if (%s) emit('%s', 1);" % (cond, name) for name, cond in conditions.items())
    ViewDefinition(design_doc_name, 'overview_total',
                   'function(doc) { if (doc.type == "token") { %s } }' % counts,
                   'function (key, values, rereduce) { return sum(values); }').sync(db)


def get_db():
    server = couchdb.Server(picasconfig.PICAS_HOST_URL)
    server.resource.credentials = (picasconfig.PICAS_USERNAME, picasconfig.PICAS_PASSWORD)
    return server[picasconfig.PICAS_DATABASE]


if __name__ == '__main__':
    parser = argparse.ArgumentParser()
    parser.add_argument('example', nargs='?', choices=['autopilot'])
    args = parser.parse_args()
    db = get_db()
    if args.example is None:
        create_views(db)
    else:
        create_views(db, design_doc_name='SingleCore', logic_appendix=' && doc.cores == 1')
        create_views(db, design_doc_name='MultiCore', logic_appendix=' && doc.cores == 4')
