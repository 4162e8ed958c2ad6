"""``python -m picas`` runs the ``picas`` command."""
from .cli import main

main()
