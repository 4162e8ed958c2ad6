"""What each attempt records: resource use of the command's process tree,
and what is needed to reproduce it."""
from __future__ import annotations

import hashlib
import socket
import sys

import pytest
from pilots import add, run_pilot, tokens

from picas import __version__, provenance, shaping, sources

#: Allocates about 60 MiB in a grandchild (python under the shell under sh),
#: then burns CPU for a moment: the tree's peak and CPU must show on the attempt.
HUNGRY = (f"sh -c '{sys.executable} -c \"b = bytearray(60 << 20); "
          "n = sum(range(3_000_000))\"'; echo done")


def test_an_attempt_records_cpu_time_and_the_peak_memory_of_the_whole_tree(
        db, pilot_env, tmp_path):
    add(db, tokens({"hungry": HUNGRY, "light": "true"}))
    run_pilot(pilot_env, workdir=tmp_path)
    (hungry,) = db.get("hungry")["attempts"]
    (light,) = db.get("light")["attempts"]
    assert hungry["max_rss_kib"] > 60 * 1024 > light["max_rss_kib"] > 0
    assert hungry["cpu_user_s"] + hungry["cpu_sys_s"] > 0.05
    assert hungry["cpu_user_s"] > light["cpu_user_s"]
    assert hungry["duration"] >= hungry["cpu_user_s"] * 0.5  # wall time is there too


def test_a_timed_out_command_still_records_its_resource_use(db, pilot_env, tmp_path):
    add(db, tokens({"slow": "sleep 30"}, max_attempts=1))
    run_pilot(pilot_env, "--max-token-time", "0.5", "--grace", "1", workdir=tmp_path)
    (attempt,) = db.get("slow")["attempts"]
    assert attempt["outcome"] == "timed_out"
    assert attempt["max_rss_kib"] > 0 and "cpu_user_s" in attempt


def test_an_attempt_records_what_ran_and_the_checksums_of_declared_files(
        db, pilot_env, tmp_path):
    source = tmp_path / "in.txt"
    source.write_bytes(b"input data\n")
    add(db, tokens({"made": "cat $SRC > out.txt; echo missing-too"}, env={"SRC": str(source)},
                   files={"inputs": [str(source)], "outputs": ["out.txt", "never.txt"]}))
    run_pilot(pilot_env, workdir=tmp_path / "work")
    (attempt,) = db.get("made")["attempts"]
    made = attempt["provenance"]
    digest = "sha256:" + hashlib.sha256(b"input data\n").hexdigest()
    assert made["picas"] == __version__
    assert made["python"].endswith(".".join(map(str, sys.version_info[:3])))
    assert made["command"] == "cat $SRC > out.txt; echo missing-too"
    assert made["env"] == {"SRC": str(source)}
    assert made["inputs"] == {str(source): digest}
    assert made["outputs"] == {"out.txt": digest, "never.txt": None}
    assert attempt["host"] == socket.gethostname()


def test_an_attempt_without_declared_files_or_env_records_no_checksums(db, pilot_env, tmp_path):
    add(db, tokens({"plain": ["echo", "hi"]}))
    run_pilot(pilot_env, workdir=tmp_path)
    made = db.get("plain")["attempts"][0]["provenance"]
    assert made["command"] == ["echo", "hi"]
    assert not {"env", "inputs", "outputs"} & set(made)


def test_tokens_add_keeps_declared_files_and_refuses_malformed_ones():
    shaped = shaping.shape(sources.Record(
        {"command": "x", "files": {"outputs": ["a.dat"]}}, "f:1"))
    assert shaped["files"] == {"outputs": ["a.dat"]} and "files" not in shaped["input"]
    with pytest.raises(Exception, match=r"f:1: files must be an object"):
        shaping.shape(sources.Record({"command": "x", "files": ["a"]}, "f:1"))
    with pytest.raises(Exception, match=r"files\.inputs must be a list of paths"):
        provenance.check_files({"inputs": "a"})
