"""The web view from the command line (issue 16), as real subprocesses: ``otel-agentbus
web`` over a database, the receiver's ready line, the links ``runs`` and ``trace`` print,
and ``demo --serve``."""

from __future__ import annotations

import json
import select
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from telemetry_helpers import child_env, start_receiver, terminate
from web_spans import export_spans, get_json, run_specs, store_spans, trace_hex

from otel_agentbus.receiver.store import Store

pytestmark = pytest.mark.timeout(90)


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "otel_agentbus.cli", *args],
                          capture_output=True, text=True, env=env or child_env(), timeout=60)


def _db_with_runs(path: Path, runs: int = 3) -> Path:
    with Store(path) as store:
        for index in range(1, runs + 1):
            store_spans(store, index, run_specs(index, failed=index == 2))
    return path


def _read_line(proc: subprocess.Popen[str], timeout: float = 30) -> str:
    assert proc.stdout is not None
    readable, _, _ = select.select([proc.stdout], [], [], timeout)
    return proc.stdout.readline() if readable else ""


def _end(proc: subprocess.Popen[str]) -> None:
    terminate(proc)
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


def test_web_serves_a_database_until_stopped(tmp_path: Path) -> None:
    db = _db_with_runs(tmp_path / "runs.db")
    proc = subprocess.Popen(
        [sys.executable, "-m", "otel_agentbus.cli", "web", "--db", str(db), "--listen",
         "127.0.0.1:0", "--jaeger-url", "http://localhost:16686"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env())
    try:
        ready = json.loads(_read_line(proc))
        assert ready["db"] == str(db)
        status, body = get_json(ready["web"] + "/api/runs")
        assert status == 200
        assert [r["run_id"] for r in body["runs"]] == ["run-0003", "run-0002", "run-0001"]
        assert body["runs"][1]["status"] == "failed"
        assert body["runs"][0]["links"]["jaeger"] == (
            f"http://localhost:16686/trace/{trace_hex(3)}")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0
    finally:
        _end(proc)


@pytest.mark.parametrize(("args", "message"), [
    (["--db", "missing.db"], "receiver database not found"),
    (["--listen", "0.0.0.0:0"], "without a bearer token"),
    (["--jaeger-url", "javascript:alert(1)"], "http:// or https://"),
])
def test_web_refuses_with_a_clear_error(tmp_path: Path, args: list[str], message: str) -> None:
    db = _db_with_runs(tmp_path / "runs.db", 1)
    defaults = ["--db", str(db), "--listen", "127.0.0.1:0"]
    given = dict(zip(args[::2], args[1::2], strict=True))
    merged = dict(zip(defaults[::2], defaults[1::2], strict=True)) | given
    if merged["--db"] == "missing.db":
        merged["--db"] = str(tmp_path / "missing.db")
    done = _cli("web", *[item for pair in merged.items() for item in pair])
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert done.stderr.count("\n") == 1  # one line, no traceback


def test_runs_and_trace_link_to_a_live_receiver(tmp_path: Path) -> None:
    receiver = start_receiver(tmp_path)
    try:
        export_spans(receiver.ready["web"], 1, run_specs(1))
        web = receiver.ready["web"]
        done = _cli("runs", "--db", str(receiver.db))
        assert done.returncode == 0, done.stderr
        assert f"web view: {web}/runs" in done.stdout
        listed = json.loads(_cli("runs", "--db", str(receiver.db), "--json").stdout)
        assert listed["runs"][0]["url"] == f"{web}/runs/run-0001"
        shown = _cli("trace", "run-0001", "--db", str(receiver.db))
        assert shown.stdout.rstrip().endswith(f"web view: {web}/traces/{trace_hex(1)}")
    finally:
        receiver.stop()
    # Stopped: the recorded address is gone, and the CLI says how to serve one instead.
    after = _cli("runs", "--db", str(receiver.db))
    assert web not in after.stdout
    assert f"web --db {receiver.db}" in after.stdout
    assert "web view:" not in _cli("trace", "run-0001", "--db", str(receiver.db)).stdout


def test_web_url_option_and_variable_set_the_links(tmp_path: Path) -> None:
    db = _db_with_runs(tmp_path / "runs.db", 1)
    done = _cli("runs", "--db", str(db), "--json", "--web-url", "https://agents.example/")
    assert json.loads(done.stdout)["runs"][0]["url"] == "https://agents.example/runs/run-0001"
    env = child_env(OTEL_AGENTBUS_WEB_URL="http://box:9000")
    shown = _cli("trace", "run-0001", "--db", str(db), env=env)
    assert f"web view: http://box:9000/traces/{trace_hex(1)}" in shown.stdout


def test_demo_serve_keeps_the_runs_in_a_browser(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "otel_agentbus.cli", "demo", "--runs", "3", "--db",
         str(tmp_path / "demo.db"), "--serve", "127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=child_env())
    assert proc.stdout is not None
    try:
        # Blocking reads (the module's timeout bounds them): select() cannot see lines
        # already in the text wrapper's buffer.
        line = proc.stdout.readline()
        while line and not line.startswith("Web view:"):
            line = proc.stdout.readline()
        assert line.startswith("Web view:"), line
        url = line.split()[2]
        status, body = get_json(url.replace("/runs", "/api/runs"))
        assert status == 200
        assert sorted(r["status"] for r in body["runs"]) == ["cancelled", "completed", "failed"]
        run_page = line.split("this run: ")[1].split(")")[0]
        assert "/runs/run-" in run_page
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0
    finally:
        _end(proc)


def test_demo_serve_needs_the_embedded_receiver() -> None:
    done = _cli("demo", "--serve", "--otlp-endpoint", "http://127.0.0.1:1")
    assert done.returncode == 2 and "--serve" in done.stderr
