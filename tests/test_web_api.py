"""The web view's server side (issue 16), against a real receiver over real HTTP: the runs
list (filters, pagination, totals), the trace document (nesting, open runs, the decisions
timeline, conditional polling), span detail, read-only routes, security headers, the
token and its cookie, links to Jaeger and Grafana, and the indexes the list runs on.
The browser side is tests/test_web_browser.py."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import pytest
from web_spans import (
    SpanSpec,
    export_spans,
    get,
    get_json,
    run_specs,
    span_hex,
    store_spans,
    trace_hex,
)

from otel_agentbus.receiver import Receiver, list_runs
from otel_agentbus.receiver.run_list import RunQuery, query_runs
from otel_agentbus.receiver.run_sql import run_spans_sql
from otel_agentbus.receiver.store import Store
from otel_agentbus.receiver.web import WebLinks
from otel_agentbus.receiver.web.links import check_base_url

pytestmark = pytest.mark.timeout(60)

AGENTS = ("researcher", "planner", "writer")


@pytest.fixture(scope="module")
def receiver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Receiver]:
    """Twelve runs of three agents (every fourth failed), then one still open."""
    db = tmp_path_factory.mktemp("web") / "web.db"
    links = WebLinks(jaeger_url="http://jaeger.example:16686/",
                     grafana_url="http://grafana.example:3000")
    with Receiver(db, web_links=links) as running:
        for index in range(1, 13):
            export_spans(running.http_endpoint, index,
                         run_specs(index, agent=AGENTS[index % 3], failed=index % 4 == 0))
        export_spans(running.http_endpoint, 13, run_specs(13, open_run=True))
        yield running


def api(receiver: Receiver, path: str) -> Any:
    status, body = get_json(receiver.http_endpoint + path)
    assert status == 200, body
    return body


# ---- the runs list ---------------------------------------------------------------------


def test_list_has_one_row_per_run_newest_first(receiver: Receiver) -> None:
    body = api(receiver, "/api/runs")
    rows = body["runs"]
    assert [r["run_id"] for r in rows] == [f"run-{i:04d}" for i in range(13, 0, -1)]
    stored = {r.run_id: r for r in list_runs(receiver.db_path)}
    for row in rows:  # the CLI and the web view agree on every run
        assert row["status"] == stored[row["run_id"]].status
        assert row["trace_id"] == stored[row["run_id"]].trace_id
    assert body["next"] is None
    assert body["agents"] == sorted(AGENTS)
    assert body["statuses"] == ["completed", "failed", "running"]


def test_a_row_carries_its_totals_and_links(receiver: Receiver) -> None:
    rows = {r["run_id"]: r for r in api(receiver, "/api/runs")["runs"]}
    failed = rows["run-0004"]
    assert failed["status"] == "failed"
    assert failed["error"] == "TimeoutError: no answer"
    assert failed["tool_calls"] == 1 and failed["decisions"] == 1 and failed["problems"] == 1
    assert (failed["input_tokens"], failed["output_tokens"]) == (100, 10)
    assert failed["span_count"] == 4 and failed["duration_ms"] == 100.0
    assert failed["start_ns"] == str(1_790_000_000_000_000_000 + 4000 * 1_000_000)
    trace_id = trace_hex(4)
    assert failed["links"] == {
        "run": "/runs/run-0004",
        "trace": f"/traces/{trace_id}",
        "jaeger": f"http://jaeger.example:16686/trace/{trace_id}",
        "grafana": failed["links"]["grafana"],
    }
    grafana = urlsplit(failed["links"]["grafana"])
    assert (grafana.netloc, grafana.path) == ("grafana.example:3000", "/explore")
    panes = json.loads(parse_qs(grafana.query)["panes"][0])
    (pane,) = panes.values()
    assert pane["queries"][0]["query"] == trace_id
    assert pane["queries"][0]["datasource"] == {"type": "tempo", "uid": "tempo"}
    running = rows["run-0013"]
    assert running["status"] == "running" and running["duration_ms"] is None
    assert running["error"] is None


@pytest.mark.parametrize(("query", "expected"), [
    ("agent=planner", [10, 7, 4, 1]),
    ("status=failed", [12, 8, 4]),
    ("status=running", [13]),
    ("agent=writer&status=failed", [8]),
    ("q=run-0011", [11]),
    ("q=" + trace_hex(5), [5]),
    ("since=" + str(1_790_000_000_000_000_000 + 11_000 * 1_000_000), [13, 12, 11]),
    ("until=2026-09-21T00:00:00Z", []),
    ("agent=nobody", []),
])
def test_filters(receiver: Receiver, query: str, expected: list[int]) -> None:
    rows = api(receiver, f"/api/runs?{query}")["runs"]
    assert [r["run_id"] for r in rows] == [f"run-{i:04d}" for i in expected]


def test_pages_cover_every_run_once(receiver: Receiver) -> None:
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        suffix = "" if cursor is None else f"&before={quote(cursor)}"
        body = api(receiver, f"/api/runs?limit=5{suffix}")
        seen += [r["run_id"] for r in body["runs"]]
        pages += 1
        cursor = body["next"]
        if cursor is None:
            break
    assert pages == 3
    assert seen == [f"run-{i:04d}" for i in range(13, 0, -1)]


@pytest.mark.parametrize(("query", "named"), [
    ("limit=0", "limit"), ("limit=many", "limit"), ("limit=501", "limit"),
    ("since=yesterday", "since"), ("until=12:00", "until"), ("before=xyz", "before"),
    ("q=ab", "q"), ("since=2999-01-01T00:00:00Z", "since"), ("until=99999999999999999999", "until"),
])
def test_bad_parameters_are_named(receiver: Receiver, query: str, named: str) -> None:
    status, body = get_json(f"{receiver.http_endpoint}/api/runs?{query}")
    assert status == 400
    assert body["error"].startswith(named)


# ---- a trace ---------------------------------------------------------------------------


def test_trace_document_nests_spans_and_lists_decisions(receiver: Receiver) -> None:
    by_run = api(receiver, "/api/runs/run-0004")
    by_trace = api(receiver, f"/api/traces/{trace_hex(4)}")
    assert by_run == by_trace
    spans = by_trace["spans"]
    assert [(s["name"], s["depth"]) for s in spans] == [
        ("invoke_agent planner", 0), ("node act", 1), ("chat gpt-4o", 2),
        ("execute_tool search", 2)]
    tool = spans[3]
    assert tool["status"] == "ERROR" and tool["status_message"] == "TimeoutError: no answer"
    assert tool["start_us"] == 31_000.0 and tool["duration_us"] == 48_000.0
    assert by_trace["in_progress"] is False and by_trace["duration_us"] == 100_000.0
    assert [(t["kind"], t["span_name"]) for t in by_trace["timeline"]] == [
        ("decision", "node act"), ("problem", "node act")]
    assert by_trace["timeline"][0]["summary"] == "chosen=search"
    assert by_trace["run"]["run_id"] == "run-0004"
    assert by_trace["links"]["jaeger"].endswith(f"/trace/{trace_hex(4)}")


def test_span_detail_has_attributes_and_events(receiver: Receiver) -> None:
    node = api(receiver, f"/api/traces/{trace_hex(4)}/spans/{span_hex(402)}")
    assert node["attributes"]["gen_ai.agent.name"] == "planner"
    assert [e["name"] for e in node["events"]] == ["agentbus.decision", "agentbus.problem"]
    assert node["events"][0]["attributes"]["agentbus.decision.options"] == ["search", "answer"]
    assert node["resource"]["service.name"] == "web-tests"
    status, body = get_json(f"{receiver.http_endpoint}/api/traces/{trace_hex(4)}/spans/"
                            "00000000000000ff")
    assert status == 404 and "00000000000000ff" in body["error"]


def test_an_open_run_stands_in_for_its_run_span(receiver: Receiver) -> None:
    document = api(receiver, "/api/runs/run-0013")
    assert document["in_progress"] is True
    root, node, chat = document["spans"]
    assert root["span_id"] == span_hex(1301) and root["pending"] is True
    assert root["name"] == "invoke_agent researcher" and root["duration_us"] is None
    assert node["parent_span_id"] == root["span_id"] and node["depth"] == 1
    assert chat["depth"] == 2
    detail = api(receiver, f"/api/traces/{trace_hex(13)}/spans/{root['span_id']}")
    assert detail["pending"] is True and detail["attributes"]["agentbus.run.id"] == "run-0013"


def test_polling_answers_304_until_the_trace_changes(tmp_path: Path) -> None:
    with Receiver(tmp_path / "poll.db") as receiver:
        export_spans(receiver.http_endpoint, 1, run_specs(1, open_run=True))
        url = f"{receiver.http_endpoint}/api/runs/run-0001"
        status, headers, body = get(url)
        assert status == 200 and json.loads(body)["in_progress"] is True
        etag = headers["etag"]
        assert get(url, {"If-None-Match": etag})[0] == 304
        export_spans(receiver.http_endpoint, 1, run_specs(1))  # the run ends
        status, headers, body = get(url, {"If-None-Match": etag})
        assert status == 200 and headers["etag"] != etag
        document = json.loads(body)
        assert document["in_progress"] is False
        assert [s["pending"] for s in document["spans"]] == [False] * 4
        assert document["run"]["status"] == "completed"


@pytest.mark.parametrize("path", ["/api/runs/run-9999", "/api/traces/" + "ab" * 16])
def test_unknown_run_or_trace_is_404(receiver: Receiver, path: str) -> None:
    status, body = get_json(receiver.http_endpoint + path)
    assert status == 404 and "error" in body


def test_bad_trace_id_is_400(receiver: Receiver) -> None:
    status, body = get_json(receiver.http_endpoint + "/api/traces/not-hex")
    assert status == 400 and "32 hex digits" in body["error"]


# ---- read-only, headers, auth ----------------------------------------------------------


def test_no_route_changes_data(receiver: Receiver) -> None:
    def counts() -> tuple[int, ...]:
        with sqlite3.connect(f"file:{receiver.db_path}?mode=ro", uri=True) as conn:
            return tuple(conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
                         for t in ("spans", "metrics", "logs"))

    before = counts()
    for path in ("/runs", "/runs/run-0004", f"/traces/{trace_hex(4)}", "/api/runs",
                 "/api/runs/run-0004", f"/api/traces/{trace_hex(4)}"):
        for method in ("POST", "PUT", "DELETE", "PATCH"):
            status, headers, _ = get(receiver.http_endpoint + path, method=method, body=b"{}")
            # Not the web view's: the OTLP endpoint refuses it (unknown path).
            assert status == 404, (method, path, status)
            assert "content-security-policy" not in headers
    assert counts() == before


def test_pages_and_api_carry_a_strict_policy(receiver: Receiver) -> None:
    for path in ("/runs", "/api/runs", "/api/runs/run-0001", "/login"):
        status, headers, _ = get(receiver.http_endpoint + path)
        policy = headers["content-security-policy"]
        assert "script-src 'self'" in policy and "default-src 'none'" in policy
        assert "unsafe-inline" not in policy
        assert headers["x-content-type-options"] == "nosniff"
    status, headers, _ = get(receiver.http_endpoint + "/")
    assert status == 307 and headers["location"] == "/runs"


def test_otlp_paths_stay_otlp(receiver: Receiver) -> None:
    status, _, body = get(receiver.http_endpoint + "/v1/traces")
    assert status == 405 and b"POST" in body


def test_without_the_web_view_the_listener_is_otlp_only(tmp_path: Path) -> None:
    with Receiver(tmp_path / "plain.db", web=False) as receiver:
        assert receiver.web_url is None
        status, _, _ = get(receiver.http_endpoint + "/api/runs")
        assert status == 404


def test_a_token_guards_every_page_and_the_api(tmp_path: Path) -> None:
    with Receiver(tmp_path / "auth.db", token="s3cret") as receiver:
        base = receiver.http_endpoint
        export_spans_with_token(base, "s3cret")
        status, _, page = get(base + "/runs")
        assert status == 401 and b'action="/login"' in page  # the login form instead
        assert get(base + "/api/runs")[0] == 401
        assert get(base + "/api/runs", {"Authorization": "Bearer s3cret"})[0] == 200

        wrong = get(base + "/login", method="POST", body=b"token=nope&next=/runs/run-0001")
        assert wrong[0] == 303 and "failed=1" in wrong[1]["location"]
        assert "set-cookie" not in wrong[1]
        status, headers, _ = get(base + "/login", method="POST",
                                 body=b"token=s3cret&next=/runs/run-0001")
        assert status == 303 and headers["location"] == "/runs/run-0001"
        cookie = headers["set-cookie"]
        assert "httponly" in cookie.lower() and "samesite=strict" in cookie.lower()
        assert "s3cret" not in cookie
        session = cookie.split(";", 1)[0]
        assert get(base + "/api/runs", {"Cookie": session})[0] == 200
        assert get(base + "/runs", {"Cookie": session})[0] == 200


def export_spans_with_token(base: str, token: str) -> None:
    from web_spans import request_bytes

    status, _, _ = get(f"{base}/v1/traces", {"Content-Type": "application/x-protobuf",
                                             "Authorization": f"Bearer {token}"},
                       method="POST", body=request_bytes(1, run_specs(1)))
    assert status == 200


@pytest.mark.parametrize("target", ["//evil.example/x", "https://evil.example/",
                                    "/\\evil.example", "javascript:alert(1)"])
def test_login_never_redirects_off_the_server(tmp_path: Path, target: str) -> None:
    with Receiver(tmp_path / "auth.db", token="t") as receiver:
        status, headers, _ = get(receiver.http_endpoint + "/login", method="POST",
                                 body=f"token=t&next={quote(target)}".encode())
        assert status == 303 and headers["location"] == "/runs"


@pytest.mark.parametrize("url", ["javascript:alert(1)", "ftp://x", "localhost:16686", ""])
def test_link_targets_must_be_http(url: str) -> None:
    with pytest.raises(ValueError, match="http"):
        check_base_url(url, "the Jaeger URL")


def test_links_are_off_unless_configured() -> None:
    links = WebLinks.from_env({})
    assert links.jaeger("ab" * 16) is None and links.grafana("ab" * 16) is None
    env = {"OTEL_AGENTBUS_JAEGER_URL": "http://j:16686",
           "OTEL_AGENTBUS_GRAFANA_URL": "https://g.example", "OTEL_AGENTBUS_GRAFANA_TEMPO_UID":
           "traces"}
    links = WebLinks.from_env(env)
    assert links.jaeger("ab" * 16) == "http://j:16686/trace/" + "ab" * 16
    assert "%22uid%22%3A%22traces%22" in (links.grafana("ab" * 16) or "")


# ---- the database side -----------------------------------------------------------------


def test_the_list_reads_only_run_rows(tmp_path: Path) -> None:
    """Both halves of the run query use their partial index (no scan of every span)."""
    with Store(tmp_path / "plan.db") as store:
        store_spans(store, 1, run_specs(1))
    with sqlite3.connect(tmp_path / "plan.db") as conn:
        plan = " ".join(row[-1] for row in conn.execute(
            "EXPLAIN QUERY PLAN " + run_spans_sql("s.span_id")))
    assert "spans_runs" in plan and "spans_pending" in plan
    assert "SCAN s\n" not in plan and not plan.rstrip().endswith("SCAN s")


def test_totals_fall_back_to_model_calls_when_the_run_span_has_none(tmp_path: Path) -> None:
    specs = run_specs(1)
    specs.append(SpanSpec(199, 102, "chat gpt-4o", 40, 50, {
        "gen_ai.operation.name": "chat", "gen_ai.usage.input_tokens": 5}))
    with Store(tmp_path / "t.db") as store:
        store_spans(store, 1, specs)
    with sqlite3.connect(tmp_path / "t.db") as conn:
        conn.row_factory = sqlite3.Row
        (run,) = query_runs(conn, RunQuery()).runs
    assert (run.input_tokens, run.output_tokens) == (105, 10)


def test_a_running_receiver_records_where_its_web_view_is(tmp_path: Path) -> None:
    from otel_agentbus.receiver.web_url import recorded_web_url

    db = tmp_path / "meta.db"
    with Receiver(db) as receiver:
        assert recorded_web_url(db) == receiver.web_url
        assert receiver.run_url("run/1 x") == f"{receiver.web_url}/runs/run%2F1%20x"
    assert recorded_web_url(db) is None
