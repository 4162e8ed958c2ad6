"""Futures of tokens (picas.futures): what a driver script or notebook sees
while pilots run its tokens. Tokens are run by real ``picas pilot``
processes, or finished by writing their documents directly."""
from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
from concurrent.futures import CancelledError

import pytest
from pilots import run_pilot, state_of
from support import eventually

from picas import errors, state
from picas.database import Database
from picas.futures import CommandResult, Pool, as_completed, function_name
from picas.state import Holder, Outcome, TokenState
from picas.transport import Transport
from picas.watch import Watcher

WAIT = 60  # seconds before a test gives up on a future (a bound, not a measurement)


def finish(db: Database, token_id: str, outcome: Outcome = Outcome.SUCCEEDED,
           exit_code: int = 0, **fields: object) -> dict:
    """Claim and finish a token by writing it, as a pilot would."""
    doc = state.lock(db.get(token_id), Holder.here("tester"), 60)
    db.put(doc)
    done = state.finish({**doc, **fields}, state.new_attempt(doc, outcome, exit_code=exit_code),
                        default_max_attempts=1)
    db.put(done)
    return done


def squares(n: int, power: int = 2) -> int:
    return n ** power


class TestCommands:
    def test_a_pilot_runs_the_token_and_the_future_gives_exit_code_and_logs(
            self, db, pilot_env, tmp_path):
        with Pool(db) as pool:
            future = pool.submit("echo hello; echo warn >&2")
            assert not future.done()
            run_pilot(pilot_env, workdir=tmp_path)
            result = future.result(WAIT)
        assert isinstance(result, CommandResult)
        assert (result.exit_code, result.attempts) == (0, 1)
        assert (result.stdout(), result.stderr()) == ("hello\n", "warn\n")

    def test_keyword_fields_fill_a_command_template_as_tokens_add_does(
            self, db, pilot_env, tmp_path):
        with Pool(db, tags=["mine"]) as pool:
            futures = [pool.submit("echo {n}", n=n) for n in (1, 2)]
            token = db.get(futures[0].token_id)
            assert (token["command"], token["input"], token["tags"]) == ("echo 1", {"n": 1},
                                                                         ["mine"])
            run_pilot(pilot_env, workdir=tmp_path)
            assert [f.result(WAIT).stdout() for f in futures] == ["1\n", "2\n"]

    def test_a_failed_token_raises_with_its_exit_code_and_message(self, db, pilot_env, tmp_path):
        with Pool(db, max_attempts=2) as pool:
            future = pool.submit("echo broken input >&2; exit 3")
            run_pilot(pilot_env, workdir=tmp_path)
            with pytest.raises(errors.TokenFailed) as failed:
                future.result(WAIT)
        assert (failed.value.exit_code, failed.value.attempts) == (3, 2)
        assert failed.value.token_id == future.token_id
        assert "exit code 3 after 2 attempt(s): broken input" in str(failed.value)

    def test_map_gives_results_in_order_and_as_completed_yields_each_once(
            self, db, pilot_env, tmp_path):
        with Pool(db) as pool:
            results = pool.map("echo {n}", [{"n": n} for n in range(5)])
            others = [pool.submit(["echo", word]) for word in ("a", "b")]
            run_pilot(pilot_env, workdir=tmp_path)
            assert [r.stdout() for r in results] == [f"{n}\n" for n in range(5)]
            assert sorted(f.token_id for f in as_completed(others, WAIT)) == \
                sorted(f.token_id for f in others)

    def test_the_same_work_twice_is_one_token_and_a_finished_one_resolves_at_once(self, db):
        with Pool(db) as pool:
            first = pool.submit("echo once")
            finish(db, first.token_id)
            assert first.result(WAIT).exit_code == 0
            again = pool.submit("echo once")
            assert again.token_id == first.token_id
            assert again.result(WAIT).exit_code == 0

    def test_wrong_input_is_refused_before_anything_is_written(self, db):
        with Pool(db) as pool:
            with pytest.raises(errors.InvalidToken, match="managed by picas"):
                pool.submit("echo {lock}", lock=1)
            with pytest.raises(TypeError, match="keyword fields"):
                pool.submit("echo", "positional")
        assert [row["id"] for row in db.all_docs()["rows"]
                if not row["id"].startswith("_design/")] == []


class TestFunctions:
    def test_a_function_token_names_the_function_and_its_json_arguments(self, db):
        with Pool(db) as pool:
            future = pool.submit(squares, 3, power=3)
            token = db.get(future.token_id)
            assert (token["function"], token["args"], token["kwargs"]) == (
                f"{__name__}:squares", [3], {"power": 3})
            assert "command" not in token
            assert pool.submit(squares, 4).token_id != future.token_id
            assert pool.submit(squares, 3, power=3).token_id == future.token_id
            pool.shutdown(wait=False, cancel_futures=True)

    def test_the_future_gives_the_output_the_pilot_stored(self, db):
        with Pool(db) as pool:
            future = pool.submit(squares, 3)
            finish(db, future.token_id, output={"value": 9})
            assert future.result(WAIT) == {"value": 9}

    def test_module_functions_are_named_and_lambdas_refused(self):
        assert function_name(json.dumps) == "json:dumps"
        with pytest.raises(errors.InvalidToken, match="lambda"):
            function_name(lambda n: n)

    def test_local_and_main_functions_are_refused(self):
        def local(n):
            return n

        with pytest.raises(errors.InvalidToken, match="inside a function"):
            function_name(local)
        local.__module__, local.__qualname__ = "__main__", "local"
        with pytest.raises(errors.InvalidToken, match="__main__"):
            function_name(local)

    def test_arguments_must_be_json(self, db):
        with Pool(db) as pool, pytest.raises(errors.InvalidToken, match="JSON values"):
            pool.submit(squares, {1, 2})


class TestCancel:
    def test_a_waiting_token_is_cancelled_in_the_database(self, db):
        with Pool(db) as pool:
            future = pool.submit("echo never")
            twin = pool.submit("echo never")
            assert future.cancel() and future.cancelled()
            assert state_of(db, future.token_id) is TokenState.CANCELLED
            with pytest.raises(CancelledError):
                future.result(WAIT)
            with pytest.raises(CancelledError):
                twin.result(WAIT)

    def test_a_running_token_is_not_cancelled(self, db):
        with Pool(db) as pool:
            future = pool.submit("echo busy")
            db.put(state.lock(db.get(future.token_id), Holder.here("tester"), 60))
            eventually(future.running, True, timeout=WAIT)
            assert not future.cancel()
            assert state_of(db, future.token_id) is TokenState.LOCKED
            pool.shutdown(wait=False)

    def test_a_token_cancelled_elsewhere_cancels_its_future(self, db):
        with Pool(db) as pool:
            future = pool.submit("echo elsewhere")
            db.put(state.cancel(db.get(future.token_id)))
            with pytest.raises(CancelledError):
                future.result(WAIT)


class TestNotify:
    def test_notify_runs_once_per_token_even_when_changes_come_again(self, db):
        seen: list[str] = []
        with Pool(db, notify=lambda f: seen.append(f.token_id)) as pool:
            future = pool.submit("echo notify")
            done = finish(db, future.token_id)
            future.result(WAIT)
            db.put(done)  # the same finished token changes again
            other = pool.submit("echo other")
            finish(db, other.token_id)
            other.result(WAIT)
        assert sorted(seen) == sorted([future.token_id, other.token_id])

    def test_a_failing_callback_is_logged_and_the_others_still_run(self, db, caplog):
        called = threading.Event()

        def broken(_future):
            raise RuntimeError("callback bug")

        with caplog.at_level(logging.ERROR, logger="picas.futures"), \
                Pool(db, notify=broken) as pool:
            future = pool.submit("echo x")
            future.add_done_callback(lambda _f: called.set())
            finish(db, future.token_id)
            assert future.result(WAIT).exit_code == 0
            assert called.wait(WAIT)
        assert "notify callback failed" in caplog.text


class TestWatching:
    def test_tokens_added_elsewhere_can_be_watched(self, db):
        first = Pool(db)
        token_id = first.submit("echo added").token_id
        first.shutdown(wait=False)
        with Pool(db) as pool:
            future, = pool.watch([token_id])
            finish(db, token_id, Outcome.FAILED, exit_code=2)
            with pytest.raises(errors.TokenFailed, match="exit code 2"):
                future.result(WAIT)
            with pytest.raises(errors.NotFound, match="no-such-token"):
                pool.watch(["no-such-token"])

    def test_a_deleted_token_fails_its_future(self, db):
        with Pool(db) as pool:
            future = pool.submit("echo gone")
            doc = db.get(future.token_id)
            db.delete(doc["_id"], doc["_rev"])
            with pytest.raises(errors.TokenFailed, match="deleted"):
                future.result(WAIT)

    def test_the_feed_comes_back_after_its_connection_drops(self, db, couch):
        with Relay(couch.url) as relay:
            remote = Database(Transport(relay.url, couch.username, couch.password), db.name)
            with Pool(remote) as pool:
                future = pool.submit("echo through")
                eventually(lambda: relay.connections > 0, True, timeout=WAIT)
                relay.drop()
                finish(db, future.token_id)
                assert future.result(WAIT).exit_code == 0

    def test_a_database_that_is_not_there_ends_the_feed_and_fails_its_futures(self, couch):
        # Removing the database under a live feed races with pouchdb-server,
        # which serves a removed database again to a request that comes
        # right after its removal; so the feed starts on a missing one.
        missing = Database(couch.transport(), "picas_test_never_created")
        failures: list[Exception] = []
        watcher = Watcher(missing, lambda doc: None, failures.append)
        watcher.watch(["t-1"])
        eventually(lambda: len(failures), 1, timeout=WAIT)
        assert isinstance(failures[0], errors.DatabaseNotFound)
        eventually(lambda: watcher.alive, False, timeout=WAIT)
        with Pool(missing) as pool, pytest.raises(errors.DatabaseNotFound):
            pool.submit("echo lost")


class TestShutdown:
    def test_leaving_the_block_waits_and_stops_the_feed_thread(self, db):
        with Pool(db) as pool:
            future = pool.submit("echo done")
            threading.Timer(0.5, finish, (db, future.token_id)).start()
        assert future.done() and not pool._watcher.alive
        assert not [t for t in threading.enumerate() if t.name == "picas-watch"]
        with pytest.raises(RuntimeError, match="shut down"):
            pool.submit("echo late")

    def test_futures_left_pending_fail_instead_of_hanging(self, db):
        pool = Pool(db)
        future = pool.submit("echo pending")
        pool.shutdown(wait=False)
        with pytest.raises(errors.PoolClosed):
            future.result(WAIT)
        assert state_of(db, future.token_id) is TokenState.TODO

    def test_cancel_futures_cancels_what_no_pilot_took(self, db):
        pool = Pool(db)
        waiting, taken = pool.submit("echo a"), pool.submit("echo b")
        db.put(state.lock(db.get(taken.token_id), Holder.here("tester"), 60))
        eventually(taken.running, True, timeout=WAIT)
        pool.shutdown(wait=False, cancel_futures=True)
        assert waiting.cancelled()
        assert state_of(db, waiting.token_id) is TokenState.CANCELLED
        assert state_of(db, taken.token_id) is TokenState.LOCKED


class Relay:
    """A TCP relay to the server whose connections can be dropped at will."""

    def __init__(self, upstream: str) -> None:
        host, port = upstream.split("://", 1)[1].split(":")
        self.upstream = (host, int(port.rstrip("/")))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.connections = 0
        self._open: list[socket.socket] = []

    def __enter__(self) -> Relay:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.listener.close()
        self.drop()

    def drop(self) -> None:
        for sock in list(self._open):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self._open.clear()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            self._open += [client, server]
            self.connections += 1
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)


def test_the_pool_is_exported_beside_the_pool_settings_module():
    import picas
    import picas.futures
    import picas.pool

    assert picas.Pool is picas.futures.Pool
    assert picas.pool.__name__ == "picas.pool"


def test_a_request_the_server_keeps_open_times_out_as_such(couch, db):
    """What the watcher takes for "nothing changed" where the server does not
    end a quiet long poll (pouchdb-server), and not for a broken connection."""
    quick = Database(Transport(couch.url, couch.username, couch.password, timeout=0.5), db.name)
    since = db.info()["update_seq"]
    with pytest.raises(errors.TimedOut, match=r"no answer within 0\.5 s"):
        quick.changes(doc_ids=["nothing"], since=since, feed="longpoll", timeout=60000)
