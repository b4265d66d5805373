"""The web view in a real browser: headless Chromium (Debian's) driven by Playwright, against
the embedded receiver after a demo.

Skipped when Playwright or Chromium is missing, except under CI=true, where that fails.
With AGENTBUS_WEB_SCREENSHOTS=<dir>, the runs list and the failed run's page are saved
there as web-runs.png and web-run.png (the docs' screenshots, docs/img/).
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Status, StatusCode
from web_browser_support import (
    CHROMIUM_ARGS,
    SCREENSHOTS_ENV,
    VIEWPORT,
    LiveBus,
    event,
    in_thread,
    require_browser,
    run_statuses,
    stored_span_count,
    wait_for,
    web_receiver,
)

from otel_agentbus.demo import run_demo
from otel_agentbus.receiver import Receiver, RunRow, get_trace, list_runs
from otel_agentbus.receiver.web.links import WebLinks

if TYPE_CHECKING:
    from playwright.sync_api import Browser, ConsoleMessage, Page, Playwright

pytestmark = pytest.mark.timeout(90)

CANARY_TOOL = "<script>window.__pwned=1</script>"
CANARY_ATTRIBUTE = '<img src=x onerror="window.__pwned=2">'
CANARY_AGENT = "<svg onload=window.__pwned=3>"
DEMO_RUNS = 10
PAGE = 4
BIG_SPANS = 10_000
TOKEN = "web-test-token-5f1c"

# Collects CSP violations from the first script on every page (init scripts are not
# subject to the page's CSP).
CSP_WATCH = """
window.__csp = [];
document.addEventListener("securitypolicyviolation",
  (e) => window.__csp.push(`${e.violatedDirective} ${e.blockedURI}`));
"""


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as started:
        yield started


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    launched = playwright.chromium.launch(executable_path=require_browser(), args=CHROMIUM_ARGS,
                                          headless=True)
    try:
        yield launched
    finally:
        launched.close()


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database holding the demo's ten runs (completed, failed, cancelled)."""
    db = tmp_path_factory.mktemp("web-demo") / "demo.db"
    report = in_thread(run_demo, DEMO_RUNS, 7, db=db)
    assert report.ok, report.export_summary()
    return db


@pytest.fixture(scope="module")
def receiver(demo_db: Path) -> Iterator[Receiver]:
    with web_receiver(demo_db) as started:
        yield started


@pytest.fixture(scope="module")
def live_receiver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Receiver]:
    """An empty receiver for runs the tests publish while the page is open."""
    with web_receiver(tmp_path_factory.mktemp("web-live") / "live.db") as started:
        yield started


@dataclass
class Console:
    """What the page said on its console, uncaught errors included."""

    errors: list[str] = field(default_factory=list)
    allowed: list[re.Pattern[str]] = field(default_factory=list)

    def on_message(self, message: ConsoleMessage) -> None:
        if message.type in ("error", "warning"):
            self.errors.append(f"{message.type}: {message.text}")

    def allow(self, pattern: str) -> None:
        self.allowed.append(re.compile(pattern))

    def unexpected(self) -> list[str]:
        return [e for e in self.errors if not any(p.search(e) for p in self.allowed)]


@dataclass
class Tab:
    page: Page
    console: Console
    base: str

    def open(self, path: str) -> None:
        self.page.goto(self.base + path)

    def csp_violations(self) -> list[str]:
        found: list[str] = self.page.evaluate("() => window.__csp || []")
        return found


@pytest.fixture
def tab(browser: Browser, receiver: Receiver) -> Iterator[Tab]:
    """A fresh page on the demo receiver; the test fails on any console error or CSP
    violation it did not expect."""
    yield from _tab(browser, receiver)


@pytest.fixture
def live_tab(browser: Browser, live_receiver: Receiver) -> Iterator[Tab]:
    yield from _tab(browser, live_receiver)


def _tab(browser: Browser, receiver: Receiver) -> Iterator[Tab]:
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(10_000)
    context.add_init_script(CSP_WATCH)
    page = context.new_page()
    console = Console()
    page.on("console", console.on_message)
    page.on("pageerror", lambda error: console.errors.append(f"pageerror: {error}"))
    opened = Tab(page, console, receiver.http_endpoint)
    try:
        yield opened
        violations = opened.csp_violations() if not page.is_closed() else []
        assert not violations, f"CSP violations: {violations}"
        assert not console.unexpected(), f"console errors: {console.unexpected()}"
    finally:
        context.close()


def _screenshot(page: Page, name: str) -> None:
    target = os.environ.get(SCREENSHOTS_ENV)
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(target) / name))


def _run(db: Path, status: str) -> RunRow:
    return next(run for run in list_runs(db) if run.status == status)


def _row_ids(page: Page) -> list[str]:
    ids: list[str] = page.locator(".run-row").evaluate_all(
        "rows => rows.map(r => r.dataset.runId)")
    return ids


def _wait_rows(page: Page) -> None:
    page.wait_for_selector("#runs-body .run-row, #empty:not([hidden])")


def _wait_trace(page: Page) -> None:
    page.wait_for_selector("#w-rows .wf-row")


# ---------------------------------------------------------------- the runs list


def test_runs_list_shows_one_row_per_run_with_its_status(tab: Tab, demo_db: Path) -> None:
    tab.open("/runs")
    _wait_rows(tab.page)
    expected = sorted(list_runs(demo_db), key=lambda run: run.start_ns, reverse=True)
    assert _row_ids(tab.page) == [run.run_id for run in expected]  # newest first
    shown = tab.page.locator(".run-row").evaluate_all(
        "rows => rows.map(r => [r.dataset.runId, r.querySelector('.badge').textContent])")
    assert dict(shown) == run_statuses(demo_db)
    assert {"completed", "failed", "cancelled"} <= set(dict(shown).values())
    failed = _run(demo_db, "failed")
    row = tab.page.locator(f".run-row[data-run-id='{failed.run_id}']")
    assert failed.agent is not None and failed.agent in row.inner_text()
    assert row.locator(".row-error").inner_text().strip()
    _screenshot(tab.page, "web-runs.png")


def test_filter_by_agent_and_status_keeps_the_url(tab: Tab, demo_db: Path) -> None:
    runs = list_runs(demo_db)
    agent = runs[0].agent
    assert agent is not None
    tab.open("/runs")
    _wait_rows(tab.page)
    tab.page.select_option("#f-agent", agent)
    tab.page.wait_for_url(re.compile(r"[?&]agent="))
    tab.page.wait_for_function(
        "n => document.querySelectorAll('.run-row').length === n",
        arg=sum(run.agent == agent for run in runs))
    assert set(_row_ids(tab.page)) == {run.run_id for run in runs if run.agent == agent}

    # A shared link with a filter shows the same: the status filter from the address.
    tab.open("/runs?status=failed")
    _wait_rows(tab.page)
    assert _row_ids(tab.page) == [run.run_id for run in runs if run.status == "failed"]
    assert tab.page.locator("#f-status").input_value() == "failed"

    # Time: the demo ran a moment ago, so the last 15 minutes hold every run, and runs
    # started after a future time are none.
    tab.open("/runs")
    _wait_rows(tab.page)
    tab.page.select_option("#f-range", "15m")
    tab.page.wait_for_url(re.compile(r"[?&]range=15m"))
    tab.page.wait_for_function("n => document.querySelectorAll('.run-row').length === n",
                               arg=len(runs))
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).isoformat(timespec="seconds")
    tab.open(f"/runs?since={quote(tomorrow)}")
    tab.page.wait_for_selector("#empty:not([hidden])")
    assert tab.page.locator(".run-row").count() == 0


def test_find_by_run_id(tab: Tab, demo_db: Path) -> None:
    wanted = _run(demo_db, "cancelled")
    tab.open("/runs")
    _wait_rows(tab.page)
    tab.page.fill("#f-q", wanted.run_id)
    tab.page.press("#f-q", "Enter")
    tab.page.wait_for_url(re.compile(r"[?&]q="))
    tab.page.wait_for_function("() => document.querySelectorAll('.run-row').length === 1")
    assert _row_ids(tab.page) == [wanted.run_id]
    tab.page.fill("#f-q", wanted.trace_id[:10])  # a trace id prefix finds it too
    tab.page.press("#f-q", "Enter")
    tab.page.wait_for_url(re.compile(r"q=" + wanted.trace_id[:10]))
    tab.page.wait_for_function("() => document.querySelectorAll('.run-row').length === 1")
    assert _row_ids(tab.page) == [wanted.run_id]


def test_pagination_walks_every_run_once(tab: Tab, demo_db: Path) -> None:
    newest_first = [run.run_id for run in
                    sorted(list_runs(demo_db), key=lambda r: r.start_ns, reverse=True)]
    assert len(newest_first) == DEMO_RUNS
    tab.open(f"/runs?limit={PAGE}")
    _wait_rows(tab.page)
    assert tab.page.locator("#p-newer").is_disabled()
    pages = [_row_ids(tab.page)]
    while tab.page.locator("#p-older").is_enabled():
        tab.page.click("#p-older")
        tab.page.wait_for_function("id => document.querySelector('.run-row')?.dataset.runId "
                                   "!== id", arg=pages[-1][0])
        assert "before=" in tab.page.url and f"limit={PAGE}" in tab.page.url
        pages.append(_row_ids(tab.page))
    assert [len(page) for page in pages] == [4, 4, 2]
    assert [run_id for page in pages for run_id in page] == newest_first

    tab.page.click("#p-newer")  # back one page, then to the newest
    tab.page.wait_for_function("id => document.querySelector('.run-row')?.dataset.runId === id",
                               arg=pages[1][0])
    assert _row_ids(tab.page) == pages[1]
    tab.page.click("#p-newest")
    tab.page.wait_for_function("id => document.querySelector('.run-row')?.dataset.runId === id",
                               arg=pages[0][0])
    assert "before=" not in tab.page.url


# ---------------------------------------------------------------- the run page


def test_failed_run_page_shows_its_error_and_red_bars(tab: Tab, demo_db: Path) -> None:
    failed = _run(demo_db, "failed")
    tree = get_trace(demo_db, failed.trace_id)
    root = next(span for span in tree.spans if span.span_id == failed.span_id)
    error_ids = {span.span_id for span in tree.spans if span.status_code == "ERROR"}
    assert len(error_ids) >= 2 and root.status_message

    tab.page.set_viewport_size({"width": 1280, "height": 1400})  # every row in view
    tab.open("/runs")
    _wait_rows(tab.page)
    tab.page.click(f".run-row[data-run-id='{failed.run_id}'] .run-link")
    tab.page.wait_for_url(f"**/runs/{failed.run_id}")
    _wait_trace(tab.page)
    assert root.status_message in tab.page.locator("#s-error").inner_text()
    assert tab.page.locator("#s-status").inner_text() == "failed"
    shown_errors = tab.page.locator(".wf-row.is-error").evaluate_all(
        "rows => rows.map(r => r.dataset.spanId)")
    assert set(shown_errors) == error_ids
    colours = tab.page.locator(".wf-bar.status-error").evaluate_all(
        "bars => bars.map(b => getComputedStyle(b).backgroundColor)")
    assert len(colours) == len(error_ids)
    for colour in colours:
        red, green, blue = (int(c) for c in re.findall(r"\d+", colour)[:3])
        assert red > 180 and green < 120 and blue < 120, colour
    ok_colours = tab.page.locator(".wf-row:not(.is-error) .wf-bar").evaluate_all(
        "bars => bars.map(b => getComputedStyle(b).backgroundColor)")
    assert ok_colours and all(c not in colours for c in ok_colours)

    # The screenshot: the failed tool call selected, at the docs' size.
    tool = next(span for span in tree.spans
                if span.status_code == "ERROR" and span.name.startswith("execute_tool "))
    tab.page.click(f".wf-row[data-span-id='{tool.span_id}'] .wf-select")
    tab.page.wait_for_selector("#detail .kv")
    tab.page.set_viewport_size(VIEWPORT)
    tab.page.wait_for_timeout(100)
    _screenshot(tab.page, "web-run.png")


def test_clicking_a_span_shows_its_attributes(tab: Tab, demo_db: Path) -> None:
    run = _run(demo_db, "completed")
    tree = get_trace(demo_db, run.trace_id)
    tool = next(span for span in tree.spans if span.name.startswith("execute_tool "))
    tool_name = tool.attributes["gen_ai.tool.name"]
    tab.open(f"/runs/{run.run_id}")
    _wait_trace(tab.page)
    assert tab.page.locator("#detail").is_hidden()
    tab.page.click(f".wf-row[data-span-id='{tool.span_id}'] .wf-select")
    detail = tab.page.locator("#detail")
    detail.locator(".kv").first.wait_for()
    cells = detail.locator(".kv tr").evaluate_all(
        "rows => rows.map(r => [r.cells[0].textContent, r.cells[1].textContent])")
    assert ["gen_ai.tool.name", tool_name] in cells
    assert ["agentbus.run.id", run.run_id] in cells
    assert tool.span_id in detail.inner_text()
    assert tab.page.url.endswith(f"#span={tool.span_id}")  # shareable
    assert tab.page.locator(f".wf-row[data-span-id='{tool.span_id}']").get_attribute(
        "aria-selected") == "true"

    # The link with the span in it opens on that span.
    tab.page.reload()
    tab.page.locator("#detail .kv").first.wait_for()
    assert tool_name in tab.page.locator("#detail").inner_text()

    # Keyboard: the arrow keys walk the rows and select them.
    tab.page.locator(f".wf-row[data-span-id='{tool.span_id}'] .wf-select").focus()
    tab.page.keyboard.press("ArrowUp")
    tab.page.wait_for_function("id => !location.hash.endsWith(id)", arg=tool.span_id)


def test_decisions_are_on_the_timeline(tab: Tab, demo_db: Path) -> None:
    run = _run(demo_db, "failed")
    tree = get_trace(demo_db, run.trace_id)
    decisions = [(span.span_id, e.attributes["agentbus.decision.chosen"])
                 for span in tree.spans for e in span.events if e.name == "agentbus.decision"]
    problems = [e for span in tree.spans for e in span.events if e.name == "agentbus.problem"]
    assert decisions and problems
    tab.open(f"/runs/{run.run_id}")
    _wait_trace(tab.page)
    items = tab.page.locator(".tl-item[data-kind='decision']")
    assert items.count() == len(decisions)
    texts = items.all_inner_texts()
    for (_, chosen), text in zip(decisions, texts, strict=True):
        assert str(chosen) in text
    assert tab.page.locator(".tl-item[data-kind='problem']").count() == len(problems)
    # Clicking an item selects its span in the waterfall.
    span_id = decisions[-1][0]
    items.last.click()
    tab.page.wait_for_selector(f".wf-row.is-selected[data-span-id='{span_id}']")
    assert tab.page.url.endswith(f"#span={span_id}")


def test_deep_links_by_run_id_and_by_trace_id(tab: Tab, demo_db: Path) -> None:
    run = _run(demo_db, "cancelled")
    count = len(get_trace(demo_db, run.trace_id).spans)
    for path in (f"/runs/{run.run_id}", f"/traces/{run.trace_id}"):
        tab.open(path)
        _wait_trace(tab.page)
        assert tab.page.locator("#s-status").inner_text() == "cancelled"
        assert run.run_id in tab.page.locator("#summary").inner_text()
        assert tab.page.locator("#w-rows").get_attribute("data-visible") == str(count)
    # An unknown run says so (the failed fetch is the one console error expected).
    tab.console.allow(r"status of 404")
    tab.open("/runs/run-does-not-exist")
    tab.page.wait_for_selector("#message:not([hidden])")
    assert "run-does-not-exist" in tab.page.locator("#message").inner_text()


# ---------------------------------------------------------------- live, hostile, big


def test_an_in_progress_run_updates_without_a_reload(
    browser: Browser, live_tab: Tab, live_receiver: Receiver
) -> None:
    db = live_receiver.db_path
    scope = {"run_id": "run-live-1", "agent": "watcher"}
    node = dict(scope, node_id="watch")
    with LiveBus(live_receiver) as live:
        live.publish(
            event("agent.run.started", {"input": "watch the queue"}, **scope),
            event("agent.node.loop.started", {"max_iterations": 2}, **node),
            event("agent.tool.call.started", {"tool_call_id": "t1", "tool_name": "poll_queue"},
                  **node))
        live.flush()
        wait_for(lambda: run_statuses(db).get("run-live-1") == "running", what="the pending run")

        page = live_tab.page
        live_tab.open("/runs/run-live-1")
        page.wait_for_selector(".wf-bar.status-pending")
        assert page.locator("#s-status").inner_text() == "running"
        assert page.locator("#live").is_visible()
        list_page = page.context.new_page()
        list_page.goto(live_tab.base + "/runs")
        list_page.wait_for_selector(".run-row[data-status='running']")
        page.evaluate("() => { window.__sameDocument = true; }")
        list_page.evaluate("() => { window.__sameDocument = true; }")

        live.publish(
            event("agent.tool.call.completed", {"tool_call_id": "t1", "tool_name": "poll_queue",
                                                "is_error": False}, **node),
            event("agent.node.loop.completed", {"iterations": 1}, **node),
            event("agent.run.completed", {"output": "queue empty"}, **scope))
        live.flush()

    page.wait_for_function("() => document.querySelector('#s-status').textContent === 'completed'",
                           timeout=15_000)
    assert page.locator(".wf-bar.status-pending").count() == 0
    assert page.locator("#live").is_hidden()
    assert page.evaluate("() => window.__sameDocument") is True  # no reload happened
    list_page.wait_for_selector(".run-row[data-run-id='run-live-1'][data-status='completed']",
                                timeout=15_000)
    assert list_page.evaluate("() => window.__sameDocument") is True


def test_hostile_names_and_attributes_show_as_text(live_tab: Tab,
                                                   live_receiver: Receiver) -> None:
    scope = {"run_id": "run-canary", "agent": CANARY_AGENT}
    node = dict(scope, node_id="act")
    with LiveBus(live_receiver) as live:
        live.publish(
            event("agent.run.started", **scope),
            event("agent.node.loop.started", **node),
            event("agent.tool.call.started", {"tool_call_id": "c1", "tool_name": CANARY_TOOL},
                  **node),
            event("agent.decision.made", {"decision_id": "d1", "chosen": CANARY_ATTRIBUTE,
                                          "options": [CANARY_ATTRIBUTE, "wait"]}, **node),
            event("agent.tool.call.completed", {"tool_call_id": "c1", "tool_name": CANARY_TOOL,
                                                "is_error": True, "error": CANARY_ATTRIBUTE,
                                                "error_type": "CanaryError"}, **node),
            event("agent.node.loop.completed", **node),
            event("agent.run.completed", **scope))
        live.flush()
    wait_for(lambda: run_statuses(live_receiver.db_path).get("run-canary") == "completed",
             what="the canary run")
    page = live_tab.page

    live_tab.open("/runs?q=run-canary")
    page.wait_for_selector(".run-row[data-run-id='run-canary']")
    assert CANARY_AGENT in page.locator(".run-row[data-run-id='run-canary']").inner_text()

    live_tab.open("/runs/run-canary")
    _wait_trace(page)
    assert CANARY_AGENT in page.locator("#s-title").inner_text()
    tool_row = page.locator(".wf-row", has_text=CANARY_TOOL)
    assert tool_row.count() == 1
    assert f"execute_tool {CANARY_TOOL}" in tool_row.inner_text()
    timeline = page.locator(".tl-item[data-kind='decision']")
    assert CANARY_ATTRIBUTE in timeline.inner_text()
    tool_row.locator(".wf-select").click()
    page.locator("#detail .kv").first.wait_for()
    detail = page.locator("#detail").inner_text()
    assert CANARY_TOOL in detail and CANARY_ATTRIBUTE in detail
    timeline.click()
    page.wait_for_timeout(300)  # give a payload every chance to fire
    assert page.evaluate("() => typeof window.__pwned") == "undefined"
    # Nothing from the data became an element.
    assert page.locator("img[src='x'], svg[onload], #w-rows script, #detail script").count() == 0
    assert page.evaluate("() => document.scripts.length") == 1  # only /static/run.js


def _export_big_trace(receiver: Receiver) -> str:
    """A run of BIG_SPANS spans (100 iterations of 99 tool calls) exported with the OTel SDK
    over OTLP/gRPC; returns its trace id."""
    provider = TracerProvider(resource=Resource.create({"service.name": "big-trace"}))
    exporter = OTLPSpanExporter(endpoint=receiver.grpc_endpoint, insecure=True)
    provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=BIG_SPANS + 10,
                                                   max_export_batch_size=1000,
                                                   schedule_delay_millis=100))
    tracer = provider.get_tracer("web-browser-test")
    start = time.time_ns() - 60 * 10**9
    step = 4_000_000  # 4 ms per tool call
    root = tracer.start_span("invoke_agent big", start_time=start, attributes={
        "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "big",
        "agentbus.run.id": "run-big", "agentbus.run.status": "completed"})
    parent = trace.set_span_in_context(root)
    at = start
    made = 1
    for i in range(100):
        iteration = tracer.start_span(f"iteration {i}", context=parent, start_time=at,
                                      attributes={"gen_ai.operation.name": "invoke_workflow"})
        inner = trace.set_span_in_context(iteration)
        made += 1
        for j in range(99):
            if made >= BIG_SPANS:  # the last iteration has 98
                break
            tool = tracer.start_span(f"execute_tool step_{i}_{j}", context=inner, start_time=at,
                                     attributes={"gen_ai.operation.name": "execute_tool",
                                                 "gen_ai.tool.name": f"step_{i}_{j}"})
            if j % 50 == 49:
                tool.set_status(Status(StatusCode.ERROR, "flaky"))
            tool.end(end_time=at + step)
            at += step
            made += 1
        iteration.end(end_time=at)
    root.end(end_time=at)
    assert made == BIG_SPANS
    assert provider.force_flush(30_000)
    provider.shutdown()
    return format(root.get_span_context().trace_id, "032x")


def test_a_ten_thousand_span_trace_renders(live_tab: Tab, live_receiver: Receiver) -> None:
    trace_id = in_thread(_export_big_trace, live_receiver)
    wait_for(lambda: stored_span_count(live_receiver.db_path, trace_id) == BIG_SPANS,
             timeout=30, what="10,000 stored spans")
    page = live_tab.page
    started = time.monotonic()
    live_tab.open(f"/traces/{trace_id}")
    page.wait_for_selector(f"#w-rows[data-visible='{BIG_SPANS}']", timeout=15_000)
    elapsed = time.monotonic() - started
    assert elapsed < 15, f"{BIG_SPANS} spans took {elapsed:.1f} s"
    # Only the rows in view are in the document; scrolling brings the last one in.
    assert 0 < page.locator(".wf-row").count() < 200
    assert page.locator("#w-count").inner_text().startswith("10,000")
    page.eval_on_selector("#w-scroll", "el => { el.scrollTop = el.scrollHeight; }")
    page.wait_for_function(
        "n => [...document.querySelectorAll('.wf-row')].some(r => Number(r.dataset.index) "
        "=== n - 1)", arg=BIG_SPANS)
    assert "step_99_97" in page.locator(".wf-row").last.inner_text()
    page.click("#w-collapse")  # the root and its 100 iterations stay
    page.wait_for_selector("#w-rows[data-visible='101']")
    assert page.locator(".wf-row").first.get_attribute("aria-level") == "1"


def test_jaeger_and_grafana_links_when_configured(browser: Browser, demo_db: Path,
                                                  tmp_path: Path) -> None:
    db = tmp_path / "links.db"
    shutil.copy(demo_db, db)
    run = _run(db, "failed")
    links = WebLinks(jaeger_url="http://jaeger.example:16686",
                     grafana_url="http://grafana.example:3000")
    with web_receiver(db, links=links) as linked:
        context = browser.new_context(viewport=VIEWPORT)
        try:
            page = context.new_page()
            page.goto(f"{linked.http_endpoint}/runs/{run.run_id}")
            _wait_trace(page)
            hrefs = page.locator("#s-links a.ext-link[target=_blank]").evaluate_all(
                "links => links.map(a => [a.textContent, a.href])")
            assert [text for text, _ in hrefs] == ["Jaeger ↗", "Grafana ↗"]
            assert hrefs[0][1].startswith("http://jaeger.example:16686/")
            assert hrefs[1][1].startswith("http://grafana.example:3000/")
            assert all(run.trace_id in href for _, href in hrefs)
            page.goto(f"{linked.http_endpoint}/runs")
            _wait_rows(page)
            row = page.locator(f".run-row[data-run-id='{run.run_id}']")
            assert row.locator("a.ext-link").count() == 2
        finally:
            context.close()


# ---------------------------------------------------------------- auth


def test_with_a_token_the_login_page_leads_to_the_list(
    browser: Browser, demo_db: Path, tmp_path: Path
) -> None:
    db = tmp_path / "auth.db"
    shutil.copy(demo_db, db)
    with web_receiver(db, token=TOKEN) as guarded:
        context = browser.new_context(viewport=VIEWPORT)
        try:
            page = context.new_page()
            answer = page.goto(guarded.http_endpoint + "/runs?status=failed")
            assert answer is not None and answer.status == 401
            assert page.locator("#login").is_visible()
            assert page.locator(".run-row").count() == 0
            api = page.request.get(guarded.http_endpoint + "/api/runs")
            assert api.status == 401

            page.fill("#token", "not-the-token")
            page.click("#login button[type=submit]")
            page.wait_for_selector("#failed:not([hidden])")

            page.fill("#token", TOKEN)
            page.click("#login button[type=submit]")
            page.wait_for_url(re.compile(r"/runs\?status=failed$"))
            page.wait_for_selector(".run-row")
            assert _row_ids(page) == [_run(db, "failed").run_id]
            (cookie,) = context.cookies()
            assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        finally:
            context.close()
