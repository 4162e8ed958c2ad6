"""Facts about the package, under the names upstream PiCaS's ``metadata`` has."""
from __future__ import annotations

from . import __version__

project = "picas"
package = "picas"
description = ("A CouchDB token pool for pilot jobs on HPC clusters and grids, "
               "compatible with PiCaS.")
project_no_spaces = project.replace(" ", "")
version = __version__
authors = ["the picas developers"]
authors_string = ", ".join(authors)
emails: list[str] = []
license = "MIT"
copyright = "2026 " + authors_string
# picas has no home page of its own; upstream scripts print this, so it exists.
url = ""
