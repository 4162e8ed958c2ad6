"""`picas status`: counts per state, running tokens, errors, rate and ETA."""
from __future__ import annotations

import json
import sys
import time

import click

from .. import errors, overview
from ..state import TokenState
from .common import App, duration, echo_json, pass_app, shorten, table

BAR_WIDTH = 40


def progress_bar(finished: int, total: int, width: int = BAR_WIDTH) -> str:
    """``[#######.....]  62.0%  620/1000 finished``"""
    fraction = finished / total if total else 0.0
    filled = round(fraction * width)
    return (f"[{'#' * filled}{'.' * (width - filled)}] {fraction * 100:5.1f}%  "
            f"{finished}/{total} finished")


def _state_lines(summary: dict) -> list[str]:
    """A line per state; the waiting one says how many are blocked."""
    lines = []
    for name in (s.value for s in TokenState):
        line = f"  {name:<10} {summary[name]:>8}"
        if name == TokenState.WAITING.value and summary.get("blocked"):
            line += (f"  ({summary['blocked']} blocked: a token they wait for is in error or "
                     "cancelled)")
        lines.append(line)
    return lines


def render(summary: dict, with_bar: bool = False) -> str:
    """The human-readable status."""
    lines = [f"database '{summary['database']}' at {summary['url']}"]
    if summary.get("views_note"):
        lines.append(summary["views_note"])
    lines.extend(_state_lines(summary))
    lines.append(f"  {'total':<10} {summary['total']:>8}")
    if summary.get("conflicts") or summary.get("in_doubt"):
        lines.append(f"needs `picas recover`: {summary['conflicts']} with conflicting branches, "
                     f"{summary['in_doubt']} locked in doubt "
                     "(left by writes a cluster could not confirm)")
    if with_bar:
        lines.append(progress_bar(summary["done"] + summary["error"], summary["total"]))
    lines.append(f"rate {summary['rate']:.1f} tokens/min, ETA {_eta(summary)}")
    running = summary["running"]
    if running:
        lines.append(f"running ({summary['locked']}):")
        rows = [[shorten(r["id"], 40), r["host"], r["pilot"] or "-", duration(r["age_s"]),
                 duration(r["lease_expires_in"]) if r["lease_expires_in"] is not None else "-",
                 "cancel requested" if r["cancel_requested"] else ""] for r in running]
        body = table(["ID", "HOST", "PILOT", "AGE", "LEASE LEFT", ""], rows)
        lines.extend("  " + line for line in body.splitlines())
        if summary["locked"] > len(running):
            lines.append(f"  ... and {summary['locked'] - len(running)} more")
    if summary["errors_by_exit_code"]:
        lines.append("errors by exit code:")
        for code, count in sorted(summary["errors_by_exit_code"].items(),
                                  key=lambda item: -item[1]):
            lines.append(f"  {code or '(none)':<10} {count:>8}")
    for suspect in summary.get("suspect_hosts", []):
        lines.append(f"host {suspect['host']} fails {suspect['failure_rate']:.0%} of its "
                     f"{suspect['attempts']} attempts, the other hosts "
                     f"{suspect['others_rate']:.0%}: a broken node? (`picas errors`)")
    return "\n".join(lines)


#: What each ETA rests on, as ``picas status`` says it.
ETA_BASES = {"expected_runtime": "from the expected_runtime of the running tokens",
             "running": "a guess: each token as long as the running ones so far",
             "rate": "a guess from the recent rate"}


def _eta(summary: dict) -> str:
    eta = summary["eta_s"]
    if eta is None:
        return "unknown"
    if eta == 0 and not summary["todo"] + summary["locked"]:
        return "done"
    basis = summary.get("eta_basis")
    text = ("~" if summary.get("eta_guess") else "") + duration(eta)
    return f"{text} ({ETA_BASES[basis]})" if basis in ETA_BASES else text


@click.command("status")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object (with --watch: one per refresh).")
@click.option("--watch", is_flag=True, help="Refresh until Ctrl-C.")
@click.option("--interval", type=click.FloatRange(min=0.1), default=2.0, show_default=True,
              help="With --watch: seconds between refreshes.")
@click.option("--until-done", is_flag=True,
              help="With --watch: stop once no token is todo, locked or waiting (unblocked).")
@click.option("--running", "running_limit", type=click.IntRange(min=0), default=10,
              show_default=True, help="Show at most this many running tokens.")
@pass_app
def status_command(app: App, as_json: bool, watch: bool, interval: float, until_done: bool,
                   running_limit: int) -> None:
    """Show the tokens per state, the running ones, errors by exit code, rate and ETA.

    \b
    Examples:
      picas status
      picas status --watch --interval 5
      picas status --json | jq .todo
      picas status --watch --until-done && echo all done
    """
    db = app.open_database()
    if not watch:
        summary = overview.summary(db, running_limit=running_limit)
        if as_json:
            echo_json(summary)
        else:
            click.echo(render(summary))
        db.lagging.clear()  # said above
        return
    tty = not as_json and sys.stdout.isatty()
    first = True
    try:
        while True:
            try:
                summary = overview.summary(db, running_limit=running_limit)
            except (errors.ConnectionFailed, errors.ServerError) as exc:
                if first:
                    raise
                click.echo(f"warning: {exc}; retrying", err=True)
            else:
                _show_update(summary, as_json, tty, first)
                if until_done and _unfinished(summary) == 0:
                    return
            first = False
            time.sleep(interval)
    except KeyboardInterrupt:
        click.echo("", err=True)


def _unfinished(summary: dict) -> int:
    """Tokens that will still run: blocked ones wait for a person, not a pilot."""
    return summary["todo"] + summary["locked"] + summary["waiting"] - summary["blocked"]


def _show_update(summary: dict, as_json: bool, tty: bool, first: bool) -> None:
    """One update of ``status --watch``: a JSON line, or the screen redrawn."""
    if as_json:
        click.echo(json.dumps(summary, sort_keys=True))
        return
    if tty:
        click.clear()
    elif not first:
        click.echo()
    click.echo(render(summary, with_bar=True))


COMMANDS = [status_command]
