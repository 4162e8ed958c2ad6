"""Large pools: adds that stream and can be finished after a failure, and
commands that keep working while the server is still building the views."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner, Result
from faultproxy import FaultProxy
from support import eventually
from test_cli_tokens import failed, ok

from picas import adding, designdocs, indexing, shaping, sources
from picas.cli import cli
from picas.database import Database
from picas.shaping import Shape
from picas.transport import Transport

#: CouchDB's answer to a view query when the index takes longer than
#: ``[fabric] request_timeout`` to build.
TIMEOUT = {"error": "timeout",
           "reason": "The request could not be processed in a reasonable amount of time."}


@pytest.fixture
def proxy(couch):
    with FaultProxy(couch.url) as running:
        yield running


def _invoker(url: str, couch, db: Database, tmp_path):
    env = {"PICAS_URL": url, "PICAS_DATABASE": db.name,
           "PICAS_USERNAME": couch.username, "PICAS_PASSWORD": couch.password,
           "PICAS_CONFIG": str(tmp_path / "conf.yml"), "PICAS_PROFILE": None}

    def invoke(*args: str) -> Result:
        return CliRunner().invoke(cli, list(args), env=env)

    return invoke


@pytest.fixture
def through(couch, db, tmp_path, proxy):
    """``through(*args)``: picas reaching the test database through the proxy."""
    return _invoker(proxy.url, couch, db, tmp_path)


def _building(proxy: FaultProxy, design: str = designdocs.MONITOR) -> None:
    """Queries of ``design`` that would wait for its index time out, as on CouchDB."""
    proxy.answer(rf"^GET /[^/]+/_design/{design}/_view/(?!.*stale=)", 500, TIMEOUT)


# -- adding -----------------------------------------------------------------------

def test_an_add_holds_a_few_batches_whatever_the_input_size(db):
    """Tokens are taken from the iterator as batches are written, not all at first."""
    written = [0]
    furthest_ahead = [0]

    def tokens():
        for n, record in enumerate(sources.grid(["n=1..3000"]), 1):
            furthest_ahead[0] = max(furthest_ahead[0], n - written[0])
            yield shaping.shape(record, Shape(command="echo {n}"))

    report = adding.add(db, tokens(), batch=200, writers=2,
                        progress=lambda count: written.__setitem__(0, written[0] + count))
    assert report.added == 3000 and report.stopped_by is None
    # one batch being made, two in flight, one waiting for a free writer
    assert furthest_ahead[0] <= 4 * 200


def test_repeats_across_batches_count_as_already_there(db):
    same = [{"command": "echo same"}] * 3 + [{"command": f"echo {n}"} for n in range(5)]
    tokens = shaping.build([sources.Record(f, f"x:{n}") for n, f in enumerate(same)])
    report = adding.add(db, tokens, batch=2)
    assert (report.added, report.existing + report.duplicates) == (6, 2)


def test_an_add_cut_off_halfway_says_what_was_written_and_a_rerun_finishes(
        db, through, proxy, run):
    ok(run("tokens", "add", "--grid", "n=1..1000", "--command", "echo {n}"))
    proxy.cut(r"POST /[^/]+/_bulk_docs")  # the server writes it; the answer is lost
    first = through("tokens", "add", "--grid", "n=1..5000", "--command", "echo {n}",
                    "--batch", "500")
    stderr = failed(first, "run the same command again to add the rest")
    assert "stopped after" in stderr and "of 5,000 tokens" in stderr
    second = ok(run("tokens", "add", "--grid", "n=1..5000", "--command", "echo {n}",
                    "--json"))
    report = json.loads(second.stdout)
    assert report["added"] + report["existing"] == 5000 and report["added"] > 0
    assert report["stopped_by"] is None
    eventually(lambda: db.info()["doc_count"], 5000 + len(designdocs.load()))


def test_an_add_that_fails_at_once_gives_the_servers_reason(through, proxy):
    proxy.answer(r"^POST /[^/]+/_bulk_docs", 403,
                 {"error": "forbidden", "reason": "only members may write"})
    result = through("tokens", "add", "--grid", "n=1..3", "--command", "echo {n}")
    failed(result, "only members may write")


def test_an_add_starts_building_the_views_without_waiting(through, proxy):
    ok(through("tokens", "add", "--grid", "n=1..3", "--command", "echo {n}"))
    kicked = {line.split("/")[3] for line in proxy.seen
              if "/_view/" in line and "stale=update_after" in line}
    couchdb = Transport(proxy.url).is_apache_couchdb()
    assert kicked == ({designdocs.MONITOR} if couchdb else set())


def test_a_jsonl_file_is_read_a_line_at_a_time(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"command": "a"}\n{"command": "b"}\n{oops\n')
    records = sources.stream_file(path)
    assert next(records).fields == {"command": "a"}  # read before the bad line is reached
    assert next(records).origin == f"{path}:2"
    with pytest.raises(Exception, match=f"{path}:3: not valid JSON"):
        next(records)


def test_a_bad_line_at_the_end_of_a_large_file_adds_nothing(run, db, tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text("".join(f'{{"command": "echo {n}"}}\n' for n in range(5000)) + "{oops\n")
    failed(run("tokens", "add", str(path)), f"{path}:5001: not valid JSON")
    assert db.info()["doc_count"] == len(designdocs.load())  # the design documents only


# -- views being built ----------------------------------------------------------------

def test_status_shows_stale_counts_while_couchdb_builds_the_views(db, through, proxy, run):
    ok(run("tokens", "add", "--grid", "n=1..4", "--command", "echo {n}"))
    ok(run("status"))  # the index knows the four
    ok(run("tokens", "add", "--grid", "n=5..6", "--command", "echo {n}"))
    _building(proxy)
    result = ok(through("status", "--json"))
    summary = json.loads(result.stdout)
    # from the index as far as it got (the add started a build of it), not an error
    assert summary["todo"] in (4, 6) and summary["total"] == summary["todo"]
    # (on CouchDB, the build the add started may show in _active_tasks, with its progress)
    assert "views still being built (Monitor" in summary["views_note"]


def test_status_reads_stale_at_once_when_the_server_says_it_is_building(db, through, proxy,
                                                                        run):
    ok(run("tokens", "add", "--grid", "n=1..4", "--command", "echo {n}"))
    _building(proxy)
    proxy.answer(r"^GET /_active_tasks", 200, [
        {"type": "indexer", "database": f"shards/00000000-7fffffff/{db.name}.1764720000",
         "design_document": "_design/Monitor", "changes_done": 300, "total_changes": 1000,
         "progress": 30},
        {"type": "indexer", "database": f"shards/80000000-ffffffff/{db.name}.1764720000",
         "design_document": "_design/Monitor", "changes_done": 200, "total_changes": 1000,
         "progress": 20},
        {"type": "indexer", "database": "shards/00000000-ffffffff/other.1764720000",
         "design_document": "_design/Monitor", "changes_done": 1, "total_changes": 9}])
    result = ok(through("status"))
    assert "views still being built (Monitor 25% (500 of 2,000 changes))" in result.stdout
    # no query went to the index being built without stale=ok
    waited = [line for line in proxy.seen if "/_design/Monitor/_view/" in line
              and "stale=ok" not in line]
    assert waited == []


@pytest.mark.parametrize("args", [["tokens", "list"], ["tokens", "list", "--view", "todo"],
                                  ["export", "--view", "todo"], ["errors"]])
def test_commands_that_read_views_warn_instead_of_failing_while_they_build(
        args, db, through, proxy, run):
    ok(run("tokens", "add", "--grid", "n=1..2", "--command", "echo {n}"))
    _building(proxy)
    result = ok(through(*args))
    if "--view" in args or args == ["errors"]:
        assert "warning: views still being built" in result.stderr


def test_a_member_who_may_not_see_the_builds_is_not_locked_out(couch, db, through, proxy):
    """CouchDB answers a member's ``_active_tasks`` with 401 "not a server admin":
    that is no failed login, and the next requests must still go out."""
    proxy.answer(r"^GET /_active_tasks", 401,
                 {"error": "unauthorized", "reason": "You are not a server admin."})
    member = Database(Transport(proxy.url, couch.username, couch.password), db.name)
    assert indexing.builds(member) is None
    assert member.info()["db_name"] == db.name


def test_a_priority_pool_is_claimed_from_without_waiting_for_the_view(couch, db, proxy):
    from picas import claim, pool
    from picas.state import Holder

    pool.enable_priorities(db)
    tokens = shaping.build([sources.Record({"command": f"echo {n}", "priority": n}, f"x:{n}")
                            for n in range(1, 6)])
    adding.add(db, tokens)
    eventually(lambda: len(db.view(designdocs.MONITOR, "todo_by_priority")["rows"]), 5)
    late = shaping.build([sources.Record({"command": "echo late", "priority": 9}, "x:late")])
    adding.add(db, late)
    _building(proxy)  # from now on, a query that waits for the index would time out
    reached = Database(Transport(proxy.url, couch.username, couch.password), db.name)
    source = claim.PrioritySource(claim.ChangesSource())
    order = []
    for _ in range(6):
        order += [t["_id"] for t in claim.claim(reached, Holder("p", "h"), source=source).tokens]
    # the indexed ones by priority (the late one, too new for the index, may come any time)
    indexed = [i for i in order if i != late[0]["_id"]]
    assert indexed == [t["_id"] for t in sorted(tokens, key=lambda t: -t["priority"])]
    assert sorted(order) == sorted(t["_id"] for t in tokens + late)
    waited = [line for line in proxy.seen if "/_view/" in line and "stale=" not in line]
    assert not waited, proxy.seen
