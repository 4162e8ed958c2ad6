"""``picas report``: one HTML file with charts of what happened."""
from __future__ import annotations

from pathlib import Path

import click

from .. import report
from .common import App, pass_app, plural


@click.command("report")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("picas-report.html"), show_default=True,
              help="Where to write the HTML file.")
@pass_app
def report_command(app: App, output: Path) -> None:
    """Write one self-contained HTML file with charts: throughput over time,
    run time and memory distributions, failures by host and by signature,
    and the slowest attempts.

    It opens in any browser, offline: the charts are drawn into the file
    as SVG, with no scripts and nothing fetched from elsewhere.

    \b
    Examples:
      picas report
      picas report -o /tmp/run-42.html
    """
    db = app.open_database()
    data = report.gather(db)
    output.write_text(report.render(data), encoding="utf-8")
    click.echo(f"wrote {output} ({plural(len(data.attempts), 'attempt')} of "
               f"{plural(sum(data.counts.values()), 'token')})")


COMMANDS = [report_command]
