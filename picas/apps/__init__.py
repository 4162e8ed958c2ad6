"""Commands with upstream PiCaS's names (``picas-cli``)."""
