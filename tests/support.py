"""Helpers shared by the tests."""
from __future__ import annotations

import os

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def missing(what: str) -> None:
    """Skip for a missing part on a developer's machine; fail under CI."""
    if IN_CI:
        pytest.fail(f"{what} is missing, and CI must provide it (CI=true)")
    pytest.skip(f"{what} is missing")


def skip_unless_users_read_their_record(url: str, user: str, password: str) -> None:
    """Skip where users may not read their own _users record (so not change their password).

    Apache CouchDB 3 keeps _users to admins by default; pouchdb-server does
    not. test_upstream_config checks the message users get there.
    """
    import requests

    answer = requests.get(f"{url}/_users/org.couchdb.user:{user}", auth=(user, password),
                          timeout=10)
    if answer.status_code == 403:
        pytest.skip("this server keeps users from their own _users record")


def eventually(read, expected, timeout: float = 10.0, interval: float = 0.1):
    """``read()`` once it equals ``expected``, asserting on the last value after ``timeout``.

    On a CouchDB cluster a view (and ``_all_docs``) is read from one replica
    per shard, which may not have a write yet that a quorum confirmed a
    moment ago; on a single server the first read is the answer.
    """
    import time
    end = time.monotonic() + timeout
    value = read()
    while value != expected and time.monotonic() < end:
        time.sleep(interval)
        value = read()
    assert value == expected
    return value
