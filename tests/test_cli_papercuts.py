"""The CLI's first-hour papercuts (issue 15), each through real ``otel-agentbus``
subprocesses: closed pipes, ``--version``, defaults in ``--help``, ``--db`` checks, ``trace``
by run id or prefix, a 100-column span tree, one sort order, the CLI reachable from the
demo's suggestions, and one line for a port in use."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
from telemetry_helpers import REPO_ROOT, child_env

import otel_agentbus
from otel_agentbus.receiver.queries import get_trace, list_runs

pytestmark = pytest.mark.timeout(120)

TIMEOUT = 60
WIDTH = 100


def _env(**extra: str) -> dict[str, str]:
    env = child_env(**extra)
    env.pop("GRPC_VERBOSITY", None)
    return env


def _cli(*args: str, env: dict[str, str] | None = None,
         cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "otel_agentbus", *args], capture_output=True, text=True,
        env=env or _env(), timeout=TIMEOUT, cwd=cwd,
    )


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = tmp_path_factory.mktemp("papercuts") / "demo.db"
    done = _cli("demo", "--runs", "4", "--seed", "7", "--db", str(db), "--json")
    assert done.returncode == 0, done.stderr
    return db


def _into_closed_pipe(*args: str) -> subprocess.CompletedProcess[str]:
    """``otel-agentbus ARGS | head -0``: the reader is gone before the first write."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "otel_agentbus", *args], stdout=write_end,
            stderr=subprocess.PIPE, text=True, env=_env(), timeout=TIMEOUT,
        )
    finally:
        os.close(write_end)
    return subprocess.CompletedProcess(done.args, done.returncode, "", done.stderr)


# ---- closed pipe ---------------------------------------------------------------------


@pytest.mark.parametrize("command", [("runs", "--json"), ("runs",), ("trace",)])
def test_closed_pipe_exits_quietly(demo_db: Path, command: tuple[str, ...]) -> None:
    if command == ("trace",):
        command = ("trace", list_runs(demo_db)[0].trace_id)
    done = _into_closed_pipe(*command, "--db", str(demo_db))
    assert done.returncode == 0, done.stderr
    assert "BrokenPipeError" not in done.stderr and "Traceback" not in done.stderr
    assert done.stderr == ""


# ---- --version, python -m, --help ------------------------------------------------------


def test_version_from_one_source() -> None:
    done = _cli("--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"otel-agentbus {otel_agentbus.__version__}"
    assert version("otel-agentbus") == otel_agentbus.__version__


def test_receiver_help_shows_every_default() -> None:
    done = _cli("receiver", "--help")
    assert done.returncode == 0, done.stderr
    text = " ".join(done.stdout.split())  # argparse wraps help text at the terminal width
    for option, default in (("--grpc HOST:PORT", "127.0.0.1:4317"),
                            ("--http HOST:PORT", "127.0.0.1:4318"),
                            ("--grace GRACE", "2.0"), ("--db DB", "./agentbus.db"),
                            ("--max-body BYTES", "16777216")):
        match = re.search(re.escape(option) + r" (?:(?! --).)*?\(default: ([^)]*)\)", text)
        assert match is not None and match.group(1) == default, (option, text)
    assert text.count("(default: ") == len(set(re.findall(r"\(default: [^)]*\)", text)))


# ---- --db checks -----------------------------------------------------------------------


def test_demo_db_in_a_missing_directory_fails_without_creating_it(tmp_path: Path) -> None:
    db = tmp_path / "nonexistent" / "dir" / "x.db"
    done = _cli("demo", "--runs", "1", "--db", str(db))
    assert done.returncode == 2
    assert str(db) in done.stderr and "does not exist" in done.stderr
    assert not (tmp_path / "nonexistent").exists()


def test_receiver_db_in_a_missing_directory_fails_without_creating_it(tmp_path: Path) -> None:
    db = tmp_path / "nonexistent" / "x.db"
    done = _cli("receiver", "--grpc", "127.0.0.1:0", "--http", "127.0.0.1:0", "--db", str(db))
    assert done.returncode == 2
    assert str(db) in done.stderr and "does not exist" in done.stderr
    assert not db.parent.exists()


def test_demo_refuses_an_unrelated_sqlite_file(tmp_path: Path) -> None:
    db = tmp_path / "other.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE notes (body TEXT)")
    conn.close()
    done = _cli("demo", "--runs", "1", "--db", str(db))
    assert done.returncode == 2
    assert str(db) in done.stderr and "notes" in done.stderr and "refusing" in done.stderr
    with sqlite3.connect(db) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    conn.close()
    assert tables == {"notes"}


def test_demo_names_a_file_that_is_not_sqlite(tmp_path: Path) -> None:
    db = tmp_path / "text.db"
    db.write_text("just some text\n")
    done = _cli("demo", "--runs", "1", "--db", str(db))
    assert done.returncode == 2
    assert str(db) in done.stderr and "not a SQLite database" in done.stderr
    assert db.read_text() == "just some text\n"


def test_runs_on_a_directory_says_so(tmp_path: Path) -> None:
    done = _cli("runs", "--db", str(tmp_path))
    assert done.returncode == 2
    assert f"{tmp_path} is a directory" in done.stderr


def test_demo_reuses_its_own_database(demo_db: Path) -> None:
    before = len(list_runs(demo_db))
    done = _cli("demo", "--runs", "1", "--seed", "3", "--db", str(demo_db), "--json")
    assert done.returncode == 0, done.stderr
    assert len(list_runs(demo_db)) == before + 1


# ---- trace by trace id, run id or prefix ----------------------------------------------


def _trace_id_of(output: str) -> str:
    match = re.match(r"trace ([0-9a-f]{32})  \(", output)
    assert match is not None, output
    return match.group(1)


def test_trace_by_run_id_and_by_unique_prefixes(demo_db: Path) -> None:
    runs = list_runs(demo_db)
    run = runs[0]
    prefix = next(n for n in range(4, 33)
                  if sum(r.trace_id.startswith(run.trace_id[:n]) for r in runs) == 1)
    references = [run.trace_id, run.trace_id.upper(), run.run_id, run.trace_id[:prefix],
                  run.run_id[:-1]]
    assert sum(r.run_id.startswith(run.run_id[:-1]) for r in runs) == 1
    for reference in references:
        done = _cli("trace", reference, "--db", str(demo_db))
        assert done.returncode == 0, (reference, done.stderr)
        assert _trace_id_of(done.stdout) == run.trace_id, reference


def test_trace_ambiguous_prefix_lists_the_candidates(demo_db: Path) -> None:
    runs = list_runs(demo_db)
    shared = "run-"  # every demo run id starts with it
    assert all(r.run_id.startswith(shared) for r in runs) and len(runs) > 1
    done = _cli("trace", shared, "--db", str(demo_db))
    assert done.returncode == 2
    assert "matches" in done.stderr
    for run in runs:
        assert run.run_id in done.stderr and run.trace_id in done.stderr


def test_trace_unknown_reference_is_named(demo_db: Path) -> None:
    done = _cli("trace", "no-such-run", "--db", str(demo_db))
    assert done.returncode == 2
    assert "no-such-run" in done.stderr and str(demo_db) in done.stderr


# ---- the span tree in 100 columns -------------------------------------------------------


def test_trace_fits_100_columns_and_all_attributes_keeps_them_whole(demo_db: Path) -> None:
    trace_id = max(list_runs(demo_db), key=lambda r: r.span_count).trace_id
    done = _cli("trace", trace_id, "--db", str(demo_db))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert max(len(line) for line in lines) <= WIDTH
    assert any(line.endswith("…") and len(line) == WIDTH for line in lines)

    whole = _cli("trace", trace_id, "--db", str(demo_db), "--all-attributes")
    assert whole.returncode == 0, whole.stderr
    assert max(len(line) for line in whole.stdout.splitlines()) <= WIDTH
    assert "…" not in whole.stdout
    squeezed = "".join(whole.stdout.split())  # wrapping only adds line breaks and indents
    shown = 0
    for span in get_trace(demo_db, trace_id).spans:
        for key, value in span.attributes.items():
            if isinstance(value, str) and value and not any(c.isspace() for c in value):
                assert f"{key}={value}" in squeezed, key
                shown += 1
    assert shown > len(lines)


# ---- one sort order ---------------------------------------------------------------------


def _table_run_ids(text: str) -> list[str]:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("RUN ID"))
    ids: list[str] = []
    for line in lines[start + 1:]:
        if not line.strip():
            break
        ids.append(line.split()[0])
    return ids


def test_demo_table_and_runs_sort_newest_first(tmp_path: Path) -> None:
    db = tmp_path / "order.db"
    demo = _cli("demo", "--runs", "5", "--seed", "11", "--db", str(db))
    assert demo.returncode == 0, demo.stderr
    assert "newest first" in demo.stdout
    listed = _cli("runs", "--db", str(db))
    as_json = _cli("runs", "--db", str(db), "--json")
    assert listed.returncode == 0 and as_json.returncode == 0
    runs: list[dict[str, Any]] = json.loads(as_json.stdout)["runs"]
    newest_first = [r["run_id"] for r in sorted(runs, key=lambda r: -r["start_ns"])]
    assert [r["run_id"] for r in runs] == newest_first
    assert _table_run_ids(listed.stdout) == newest_first
    assert _table_run_ids(demo.stdout) == newest_first
    tree = demo.stdout.split("Span tree of run", 1)[1].split("\nevents published", 1)[0]
    assert "\ntrace " in tree and max(len(line) for line in tree.splitlines()) <= WIDTH


# ---- the CLI reachable from the demo's suggestions --------------------------------------


def test_demo_suggestions_run_without_the_venv_on_path(tmp_path: Path) -> None:
    venv_bin = str(Path(sys.executable).parent)
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep)
                           if p and p != venv_bin)
    if shutil.which("otel-agentbus", path=path) is not None:
        pytest.skip("otel-agentbus is installed outside this environment too")
    env = _env(PATH=path)
    db = tmp_path / "explore.db"
    demo = _cli("demo", "--runs", "3", "--db", str(db), env=env, cwd=REPO_ROOT)
    assert demo.returncode == 0, demo.stderr
    tail = demo.stdout.split("Explore it again:", 1)[1].strip().splitlines()
    assert len(tail) == 4, demo.stdout
    runs_line, trace_line, web_line = (line.strip() for line in tail[:3])
    # The web view's command serves until stopped: tests/test_web_cli.py runs it.
    assert web_line.split("    # then open ")[0].endswith(f"web --db {db}"), web_line
    listed = subprocess.run(["bash", "-c", runs_line], capture_output=True, text=True,
                            env=env, cwd=REPO_ROOT, timeout=TIMEOUT)
    assert listed.returncode == 0, (runs_line, listed.stderr)
    assert all(r.run_id in listed.stdout for r in list_runs(db))
    shown = subprocess.run(["bash", "-c", trace_line], capture_output=True, text=True,
                           env=env, cwd=REPO_ROOT, timeout=TIMEOUT)
    assert shown.returncode == 0, (trace_line, shown.stderr)
    assert shown.stdout.startswith("trace ")


# ---- a port in use: one line ----------------------------------------------------------------


def test_port_in_use_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = _cli("receiver", "--grpc", f"127.0.0.1:{port}", "--http", "127.0.0.1:0",
                    "--db", str(tmp_path / "r.db"))
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("otel-agentbus: error: cannot start receiver")
    assert str(port) in lines[0]
