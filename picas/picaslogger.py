"""Upstream PiCaS's ``picaslogger``: the logger its scripts and modules log to.

Upstream attaches a stream handler to it when imported; picas does not
(a library never configures logging), so its messages show wherever the
script's own logging setup sends them, e.g. after
``logging.basicConfig(level=logging.INFO)``. Its name is upstream's,
``PiCaS``, so that scripts configuring it by name keep working.
"""
from __future__ import annotations

import logging

picaslogger = logging.getLogger("PiCaS")

#: The format upstream's handler uses, for scripts that want the same lines.
formatter = logging.Formatter("%(asctime)s - %(name)s - %(levelname)s - %(message)s")
