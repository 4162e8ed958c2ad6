"""A token's data: attachments and inputs into its folder, declared outputs onto it."""
from __future__ import annotations

import functools
import json
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest
from pilots import TOKEN_BASE, add, run_pilot, state_of

from picas import errors, results, shaping, staging, state
from picas.memory import MemoryServer, memory_database
from picas.sources import Record
from picas.state import Holder, Outcome, TokenState


@pytest.fixture
def web(tmp_path):
    """An HTTP server on 127.0.0.1 serving the folder ``tmp_path / "www"``."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(root))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def token(token_id: str, command: str | list[str], **fields) -> dict:
    return {**TOKEN_BASE, "_id": token_id, "command": command, **fields}


def test_attachments_and_inputs_are_in_the_folder_and_declared_outputs_are_attached(
        db, pilot_env, tmp_path, web):
    www, url = web
    (www / "remote.txt").write_text("from http\n")
    (tmp_path / "local.txt").write_text("from a path\n")
    (tmp_path / "by-url.txt").write_text("from file://\n")
    add(db, [token("t", "cat data.txt local.txt by-url.txt remote.txt > joined.csv; "
                        "cp \"$PICAS_INPUT_FILE\" input-copy.json; ls > listing.txt; "
                        "mkdir plots; echo png > plots/a.png",
                   input={"alpha": 0.5},
                   outputs=["*.csv", "*.json", "listing.txt", "plots/*.png"],
                   inputs=[str(tmp_path / "local.txt"), f"file://{tmp_path}/by-url.txt",
                           f"{url}/remote.txt"])])
    db.put_attachment("t", db.get("t")["_rev"], "data.txt", b"from an attachment\n")
    report = run_pilot(pilot_env, workdir=tmp_path / "w")
    assert report["outcomes"] == {"succeeded": 1}
    done = db.get("t")
    assert db.get_attachment("t", "joined.csv") == \
        b"from an attachment\nfrom a path\nfrom file://\nfrom http\n"
    assert json.loads(db.get_attachment("t", "input-copy.json")) == {"alpha": 0.5}
    assert db.get_attachment("t", "listing.txt").split() == [  # the input file is elsewhere
        b"by-url.txt", b"data.txt", b"input-copy.json", b"joined.csv", b"listing.txt",
        b"local.txt", b"remote.txt"]
    assert done["_attachments"]["joined.csv"]["content_type"] == "text/csv"
    assert db.get_attachment("t", "plots/a.png") == b"png\n"
    assert done["outputs_skipped"] == []


def test_an_input_that_cannot_be_read_fails_the_attempt_and_the_pilot_goes_on(
        db, pilot_env, tmp_path, web):
    _, url = web
    add(db, [token("no-file", "true", inputs=[str(tmp_path / "absent.dat")], max_attempts=1),
             token("no-url", "true", inputs=[f"{url}/absent.dat"], max_attempts=1),
             token("fine", "true")])
    report = run_pilot(pilot_env, workdir=tmp_path / "w")
    assert report["stopped_because"] == "no-work"
    assert state_of(db, "fine") is TokenState.DONE
    for token_id, says in (("no-file", "No such file"), ("no-url", "HTTP 404")):
        done = db.get(token_id)
        (attempt,) = done["attempts"]
        assert state.classify(done) is TokenState.ERROR
        assert attempt["outcome"] == "failed" and attempt["exit_code"] is None
        assert attempt["error"].startswith("input ") and says in attempt["error"], attempt


def test_outputs_past_the_limits_are_left_out_and_the_token_says_why(db, pilot_env, tmp_path):
    make = ("head -c 6000 /dev/zero > a.bin; head -c 3000 /dev/zero > b.bin; "
            "head -c 4500 /dev/zero > c.bin")
    add(db, [token("big", make, outputs=["*.bin", "*.none"])])
    run_pilot(pilot_env, "--max-token-size", "6000", "--max-attachment-size", "5000",
              workdir=tmp_path / "w")
    done = db.get("big")
    assert state.classify(done) is TokenState.DONE
    assert len(db.get_attachment("big", "b.bin")) == 3000
    assert set(done["_attachments"]) == {"b.bin"}
    skipped = {item["name"]: item for item in done["outputs_skipped"]}
    assert set(skipped) == {"a.bin", "c.bin", "*.none"}
    assert skipped["a.bin"]["size"] == 6000
    assert "larger than max_attachment_size (5000 bytes)" in skipped["a.bin"]["reason"]
    assert "would take the token past 6000 bytes" in skipped["c.bin"]["reason"]
    assert skipped["*.none"]["reason"] == "no file matches"


def test_outputs_of_a_failed_run_are_not_attached(db, pilot_env, tmp_path):
    add(db, [token("fails", "echo partial > out.csv; exit 3", outputs=["*.csv"],
                   max_attempts=1)])
    run_pilot(pilot_env, workdir=tmp_path / "w")
    done = db.get("fails")
    assert "out.csv" not in done.get("_attachments", {}) and "outputs_skipped" not in done


def test_stdin_may_name_a_file_in_the_folder_or_anywhere(db, pilot_env, tmp_path):
    (tmp_path / "words.txt").write_text("hello\n")
    add(db, [token("staged", "tr a-z A-Z", inputs=[str(tmp_path / "words.txt")],
                   stdin="words.txt"),
             token("absolute", ["tr", "a-z", "A-Z"], stdin=str(tmp_path / "words.txt")),
             token("missing", "cat", stdin="nowhere.txt", max_attempts=1)])
    run_pilot(pilot_env, workdir=tmp_path / "w")
    for token_id in ("staged", "absolute"):
        assert db.get_attachment(token_id, "attempt-1.stdout") == b"HELLO\n"
    assert "stdin 'nowhere.txt'" in db.get("missing")["attempts"][0]["error"]


def test_only_the_tokens_own_attachments_are_inputs_not_its_logs(tmp_path):
    doc = {"_id": "t", "_attachments": {"attempt-1.stdout": {"stub": True},
                                        "attempt-12.stderr": {"stub": True},
                                        "sub/data.txt": {"stub": True}}}
    read: list[str] = []
    staging.place(doc, tmp_path, lambda name: read.append(name) or b"x")
    assert read == ["sub/data.txt"] and (tmp_path / "sub" / "data.txt").read_bytes() == b"x"


@pytest.mark.parametrize("name", ["../escape.txt", "/etc/escape.txt"])
def test_an_attachment_cannot_land_outside_the_folder(tmp_path, name):
    with pytest.raises(errors.InputUnavailable, match="outside the command's folder"):
        staging.place({"_attachments": {name: {"stub": True}}}, tmp_path / "w", lambda n: b"")


@pytest.mark.parametrize("fields, says", [
    ({"outputs": "*.csv"}, "outputs must be a list"),
    ({"outputs": ["../up.csv"]}, "must stay inside the command's folder"),
    ({"inputs": ["ftp://host/file"]}, "neither a path nor a file://"),
    ({"inputs": ["http://host/"]}, "names no file"),
    ({"stdin": 5}, "stdin must name a file"),
])
def test_malformed_data_fields_are_refused_when_tokens_are_added(fields, says):
    with pytest.raises(errors.InvalidToken) as caught:
        shaping.shape(Record({"command": "x", **fields}, "in.yml:4"))
    assert str(caught.value).startswith("in.yml:4: ") and says in str(caught.value)


def test_inputs_and_stdin_are_part_of_the_id_outputs_are_not():
    def id_of(**fields):
        return shaping.shape(Record({"command": "x", **fields}, "-")).get("_id")
    assert len({id_of(), id_of(inputs=["a.dat"]), id_of(stdin="a.dat")}) == 3
    assert id_of(outputs=["*.csv"]) == id_of()


# -- a server that refuses a result as too large ------------------------------------

class SmallServer(MemoryServer):
    """An in-memory CouchDB that refuses request bodies past ``limit`` bytes (HTTP 413)."""

    limit = 10_000

    def request(self, method, path, *, json=None, **kwargs):
        import json as jsonlib
        if json is not None and len(jsonlib.dumps(json)) > self.limit:
            path = [str(p) for p in path]
            raise errors.TooLarge(f"refused /{'/'.join(path)}: document_too_large")
        return super().request(method, path, json=json, **kwargs)


def _locked(db, token_id: str) -> dict:
    db.put({**TOKEN_BASE, "_id": token_id, "command": "true"})
    locked = state.lock(db.get(token_id), Holder("p1", "host"), 60)
    db.put(locked)
    return locked


def _result(locked: dict, logs: bytes, outputs: dict[str, bytes]) -> results.Result:
    attempt = state.new_attempt(locked, Outcome.SUCCEEDED, exit_code=0,
                                logs=["attempt-1.stdout"])
    return results.Result(locked["_id"], state.lease_id(locked), attempt,
                          {"attempt-1.stdout": ("text/plain", logs)}, False, {},
                          {name: ("application/octet-stream", raw)
                           for name, raw in outputs.items()})


def test_a_result_refused_as_too_large_is_written_without_its_outputs(tmp_path):
    db = memory_database(server=SmallServer())
    writer = results.ResultWriter(db, tmp_path / "spool")
    fits, too_big = _locked(db, "fits"), _locked(db, "too-big")
    writer.add(fits, _result(fits, b"log\n", {"small.dat": b"s" * 100}))
    writer.add(too_big, _result(too_big, b"log\n", {"big.dat": b"b" * 20_000}))
    writer.flush()  # one bulk request for both, refused whole: then one by one
    assert db.get_attachment("fits", "small.dat") == b"s" * 100
    done = db.get("too-big")
    assert state.classify(done) is TokenState.DONE
    assert set(done["_attachments"]) == {"attempt-1.stdout"}
    (skipped,) = done["outputs_skipped"]
    assert skipped["name"] == "big.dat" and skipped["size"] == 20_000
    assert "refused the token as too large" in skipped["reason"]
    assert not (tmp_path / "spool").exists()


def test_at_worst_the_logs_are_left_out_but_the_attempt_is_kept(tmp_path):
    db = memory_database(server=SmallServer())
    writer = results.ResultWriter(db, tmp_path / "spool")
    locked = _locked(db, "t")
    writer.add(locked, _result(locked, b"l" * 20_000, {}))
    writer.flush()
    done = db.get("t")
    assert state.classify(done) is TokenState.DONE and "_attachments" not in done
    (attempt,) = done["attempts"]
    assert attempt["logs"] == [] and "too large" in attempt["logs_left_out"]


def test_output_files_survive_the_spool(tmp_path):
    locked = {**TOKEN_BASE, "_id": "t", "lease": {"id": "L"}}
    result = _result(locked, b"log", {"out.bin": b"\x00\xff"})
    again = results.Result.from_json(json.loads(json.dumps(result.to_json())))
    assert again == result
