"""`picas pilots submit` and `picas autopilot` (being written by a helper)."""
import click


@click.group("pilots")
def pilots() -> None:
    """Submit pilot jobs to Slurm (not yet implemented)."""


@click.command("autopilot")
def autopilot() -> None:
    """Keep pilots sized to the backlog (not yet implemented)."""
    raise click.ClickException("not yet implemented")


COMMANDS = [pilots, autopilot]
