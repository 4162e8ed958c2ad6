"""Submits a pilot (sbatch slurm_example.sh) when the view has work."""
import argparse

import picasconfig
from picas.picaslogger import picaslogger
from picas.clients import CouchDB
from picas.executers import execute

picaslogger.propagate = False

parser = argparse.ArgumentParser()
parser.add_argument("--design_doc", default="SingleCore")
parser.add_argument("--view", default="todo")
parser.add_argument("--cores", default=1)
args = parser.parse_args()

client = CouchDB(url=picasconfig.PICAS_HOST_URL, db=picasconfig.PICAS_DATABASE,
                 username=picasconfig.PICAS_USERNAME, password=picasconfig.PICAS_PASSWORD)
if client.is_view_nonempty(args.view, design_doc=args.design_doc):
    picaslogger.info(f"submitting a pilot for {args.design_doc}/{args.view}")
    execute(["sbatch", f"--cpus-per-task={args.cores}",
             f"--export=ALL,VIEW={args.view},DESIGN_DOC={args.design_doc}", "slurm_example.sh"])
else:
    picaslogger.info(f"nothing to do in {args.design_doc}/{args.view}")
