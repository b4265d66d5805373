"""Plain-text rendering of runs and traces for the terminal."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator, Sequence
from typing import Any, Final

from .names import PENDING_ATTRIBUTE
from .queries import RunRow, SpanNode, SpanRow, TraceTree

KEY_ATTRIBUTE_PREFIXES: Final = ("gen_ai.", "agentbus.", "error.", "exception.")
"""Attributes shown by default under each span; the rest appear with ``--all-attributes``."""
_MAX_VALUE: Final = 80
MAX_INDENT_LEVELS: Final = 32
"""Nesting shown by indentation; deeper spans keep this indent and print their depth, so
the output of a trace thousands of spans deep grows linearly, not with depth squared."""
TREE_WIDTH: Final = 100
"""Columns the span tree fits in: longer lines are cut with an ellipsis (``--all-attributes``
wraps them instead)."""
ELLIPSIS: Final = "…"


def _value(value: Any, limit: int | None = _MAX_VALUE) -> str:
    plain = isinstance(value, str) and value and not any(c.isspace() for c in value)
    text = value if plain else None
    if text is None:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return text if limit is None or len(text) <= limit else text[: limit - 3] + "..."


def format_attributes(
    attributes: dict[str, Any], *, only_key: bool = False, whole: bool = False
) -> str:
    """``k=v k=v`` on one line, values truncated unless ``whole``."""
    items = [
        f"{k}={_value(v, None if whole else _MAX_VALUE)}"
        for k, v in attributes.items()
        if k != PENDING_ATTRIBUTE and (not only_key or k.startswith(KEY_ATTRIBUTE_PREFIXES))
    ]
    return " ".join(items)


def format_duration_s(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.1f}ms"
    return f"{seconds:.2f}s"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=False)]
    lines = [
        "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in (header, *rows)
    ]
    return "\n".join(lines)


def newest_first(runs: Sequence[RunRow]) -> list[RunRow]:
    """The one order runs are shown in (``runs``, ``runs --json`` and the demo): newest
    start first."""
    return sorted(runs, key=lambda run: (run.start_ns, run.trace_id, run.span_id),
                  reverse=True)


def format_runs(runs: Sequence[RunRow]) -> str:
    """The ``otel-agentbus runs`` table, newest run first."""
    if not runs:
        return "no runs"
    runs = newest_first(runs)
    header = ("RUN ID", "AGENT", "STATUS", "START (UTC)", "DURATION", "SPANS", "TRACE ID")
    rows = [
        (
            run.run_id,
            run.agent or "-",
            run.status,
            run.start.strftime("%Y-%m-%d %H:%M:%S"),
            format_duration_s(run.duration_s),
            str(run.span_count),
            run.trace_id,
        )
        for run in runs
    ]
    return _table(header, rows)


def _span_line(span: SpanRow) -> str:
    duration = "in progress" if span.pending else f"{span.duration_ms or 0.0:.2f} ms"
    status = span.status_code
    if span.status_message:
        status += f": {span.status_message}"
    kind = f"  [{span.kind}]" if span.kind not in ("INTERNAL", "UNSPECIFIED") else ""
    return f"{span.name}  {duration}  {status}{kind}"


def _fit(line: str, indent: str, *, wrap: bool, width: int) -> list[str]:
    """``line`` within ``width`` columns: cut with an ellipsis, or wrapped under ``indent``
    (long words broken, so nothing is lost)."""
    if len(line) <= width:
        return [line]
    if not wrap:
        return [line[: width - len(ELLIPSIS)] + ELLIPSIS]
    body = line.lstrip()
    indent = indent[: width // 2]  # a very deep span still leaves room for its text
    return textwrap.wrap(body, width=width, initial_indent=indent,
                         subsequent_indent=indent + "  ", break_on_hyphens=False) or [line]


def format_trace(
    tree: TraceTree, *, all_attributes: bool = False, width: int = TREE_WIDTH
) -> str:
    """An indented span tree with durations, status, key attributes and span events, in
    ``width`` columns: long lines are cut with an ellipsis, or with ``all_attributes``
    (every attribute, values whole) wrapped."""
    return "\n".join(
        fitted
        for line in _trace_lines(tree, all_attributes=all_attributes).splitlines()
        for fitted in _fit(line, " " * (len(line) - len(line.lstrip())),
                           wrap=all_attributes, width=width)
    )


def _trace_lines(tree: TraceTree, *, all_attributes: bool) -> str:
    """The tree one line per span, attribute set and event, however long."""
    services = sorted({s.service_name for s in tree.spans if s.service_name})
    head = f"trace {tree.trace_id}  ({len(tree.spans)} spans"
    head += f", service {', '.join(services)})" if services else ")"
    lines = [head]
    for depth, node in tree.walk():
        span = node.span
        indent = "  " * min(depth, MAX_INDENT_LEVELS)
        marker = f"[depth {depth}] " if depth > MAX_INDENT_LEVELS else ""
        lines.append(indent + marker + _span_line(span))
        attrs = format_attributes(span.attributes, only_key=not all_attributes,
                                  whole=all_attributes)
        if attrs:
            lines.append(f"{indent}    {attrs}")
        for event in span.events:
            offset = (event.time_ns - span.start_ns) / 1e6
            text = f"{indent}    * {event.name} +{offset:.2f} ms"
            event_attrs = format_attributes(event.attributes, whole=all_attributes)
            lines.append(f"{text}  {event_attrs}" if event_attrs else text)
    return "\n".join(lines)


def _indent(level: int) -> str:
    return "  " * min(level, MAX_INDENT_LEVELS)


def _json_value(value: Any, level: int) -> str:
    """``value`` as ``json.dumps(indent=2)`` writes it when nested ``level`` deep (span
    fields nest only as deep as OTLP attribute values, which protobuf bounds)."""
    return json.dumps(value, indent=2).replace("\n", "\n" + _indent(level))


def trace_json_chunks(tree: TraceTree) -> Iterator[str]:
    """``json.dumps(tree.to_dict(), indent=2)``, written piece by piece with a stack of its
    own: the same text for ordinary traces, and no recursion limit for deep ones (their
    indentation stops growing at :data:`MAX_INDENT_LEVELS`, which JSON readers ignore)."""
    yield (f'{{\n  "trace_id": {json.dumps(tree.trace_id)},\n'
           f'  "span_count": {len(tree.spans)},\n  "roots": ')
    work: list[str | tuple[SpanNode, int]] = ["\n}"]
    seen: set[int] = set()  # a hand-built cycle of nodes: each node written once
    _push_list(work, tree.roots, 1, seen)
    while work:
        item = work.pop()
        if isinstance(item, str):
            yield item
            continue
        node, level = item
        inner = _indent(level + 1)
        fields = "".join(f"{inner}{json.dumps(key)}: {_json_value(value, level + 1)},\n"
                         for key, value in node.span.to_dict().items())
        work.append(f"\n{_indent(level)}}}")
        _push_list(work, node.children, level + 1, seen)
        yield f"{{\n{fields}{inner}\"children\": "


def _push_list(work: list[str | tuple[SpanNode, int]], nodes: list[SpanNode], level: int,
               seen: set[int]) -> None:
    """Schedule ``nodes`` not yet written as a JSON list at ``level`` (``work`` is popped
    from the end, so pieces go on in reverse)."""
    fresh = [node for node in nodes if id(node) not in seen]
    seen.update(id(node) for node in fresh)
    if not fresh:
        work.append("[]")
        return
    work.append(f"\n{_indent(level)}]")
    item_indent = _indent(level + 1)
    for i in range(len(fresh) - 1, -1, -1):
        work.append((fresh[i], level + 1))
        work.append(("[\n" if i == 0 else ",\n") + item_indent)
