"""`picas pilot` and `picas recover` (being written by the lead)."""
import click


@click.command("pilot")
def pilot() -> None:
    """Run a pilot (not yet implemented)."""
    raise click.ClickException("not yet implemented")


@click.command("recover")
def recover() -> None:
    """Recover expired leases (not yet implemented)."""
    raise click.ClickException("not yet implemented")


COMMANDS = [pilot, recover]
