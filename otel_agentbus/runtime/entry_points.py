"""Entry points: the named ways into an agent, each with a trigger type and limits.

``api`` (alias ``manual``) entry points run only when called; ``event`` ones run for
each bus event matching their ``trigger_config`` filters; ``webhook`` ones for each
authenticated HTTP request on their path. Any entry point can also be triggered by hand.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal

from ..filters import EventFilter
from ..kinds import HIVE_TYPE_TO_KIND, validate_kind
from .execution import AgentFunction

if TYPE_CHECKING:
    from .graph import Graph
    from .webhook_app import WebhookRoute

TriggerType = Literal["api", "manual", "event", "webhook"]
TRIGGER_TYPES: Final = ("api", "manual", "event", "webhook")
IsolationLevel = Literal["shared", "isolated"]


class EntryPointError(ValueError):
    """An entry point that cannot be registered; the message says why."""


@dataclass(frozen=True)
class EntryPoint:
    """One way into the agent.

    Runs ``agent`` if given, else the runtime graph from ``entry_node``, else the
    runtime's own ``agent``. At most ``max_concurrent`` executions run at once; up to
    ``max_queued`` more wait (first come, first served) for a slot, each at most
    ``queue_timeout`` seconds if set (then the run fails); beyond that a trigger is
    rejected with ``ExecutionRejectedError`` (HTTP 429 for webhooks). ``timeout`` cancels
    an execution that runs longer (reason ``"timeout"``).

    ``trigger_config``: for ``event``, ``kinds`` (or Hive's ``event_types``),
    ``kind_prefix``, ``stream_id``/``filter_stream``, ``node_id``/``filter_node``,
    ``agent``, ``filter`` (an ``EventFilter``); for ``webhook``, ``path`` (default
    ``/webhooks/<id>``), ``secret`` (signatures required: a ``whsec_`` secret means
    Standard Webhooks, replay-safe; any other GitHub's ``X-Hub-Signature-256``),
    ``signature`` (``"standard"`` or ``"github"`` to choose the scheme explicitly),
    ``tolerance`` (Standard Webhooks timestamp window in seconds, default 300), ``token``
    (bearer token required), ``methods`` (default ``["POST"]``).
    """

    id: str
    name: str = ""
    entry_node: str | None = None
    agent: AgentFunction | None = None
    trigger_type: TriggerType = "api"
    trigger_config: Mapping[str, Any] = field(default_factory=dict)
    isolation_level: IsolationLevel = "shared"
    max_concurrent: int = 10
    max_queued: int = 100
    queue_timeout: float | None = None
    timeout: float | None = None


EntryPointSpec = EntryPoint
"""Hive's name for it (seed 001)."""

_EVENT_KEYS: Final = frozenset({"kinds", "event_types", "kind_prefix", "stream_id",
                                "filter_stream", "node_id", "filter_node", "agent", "filter"})
_WEBHOOK_KEYS: Final = frozenset({"path", "secret", "token", "methods", "signature",
                                  "tolerance"})


def _positive_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


def validate_entry_point(spec: EntryPoint, graph: Graph | None,
                         runtime_agent: AgentFunction | None) -> None:
    """Raise :class:`EntryPointError` naming the first problem with ``spec``."""
    if not isinstance(spec, EntryPoint):
        raise EntryPointError(f"expected an EntryPoint, got {type(spec).__name__}")
    where = f"entry point {spec.id!r}"
    if not isinstance(spec.id, str) or not spec.id:
        raise EntryPointError(f"entry point id must be a non-empty str, got {spec.id!r}")
    if spec.trigger_type not in TRIGGER_TYPES:
        raise EntryPointError(f"{where}: trigger_type must be one of {list(TRIGGER_TYPES)}, "
                              f"got {spec.trigger_type!r}")
    if spec.isolation_level not in ("shared", "isolated"):
        raise EntryPointError(f"{where}: isolation_level must be 'shared' or 'isolated', "
                              f"got {spec.isolation_level!r}")
    for name in ("max_concurrent", "max_queued"):
        value = getattr(spec, name)
        low = 1 if name == "max_concurrent" else 0
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise EntryPointError(f"{where}: {name} must be an int >= {low}, got {value!r}")
    for name in ("queue_timeout", "timeout"):
        value = getattr(spec, name)
        if value is not None and not _positive_number(value):
            raise EntryPointError(f"{where}: {name} must be a number > 0, got {value!r}")
    if spec.agent is not None:
        if not callable(spec.agent):
            raise EntryPointError(f"{where}: agent must be callable, got {spec.agent!r}")
        if spec.entry_node is not None:
            raise EntryPointError(f"{where}: give agent or entry_node, not both")
    elif spec.entry_node is not None:
        if graph is None:
            raise EntryPointError(f"{where}: entry node {spec.entry_node!r} given but the "
                                  "runtime has no graph")
        if graph.get_node(spec.entry_node) is None:
            raise EntryPointError(f"{where}: entry node {spec.entry_node!r} not found in "
                                  f"graph {graph.id!r} (nodes: {[n.id for n in graph.nodes]})")
    elif runtime_agent is None:
        raise EntryPointError(f"{where}: nothing to run: give agent=, or entry_node= with a "
                              "runtime graph, or an agent= to the runtime")
    config = spec.trigger_config
    if not isinstance(config, Mapping):
        raise EntryPointError(f"{where}: trigger_config must be a mapping")
    if spec.trigger_type == "event":
        unknown = set(config) - _EVENT_KEYS
        if unknown:
            raise EntryPointError(f"{where}: unknown trigger_config keys {sorted(unknown)} "
                                  f"(event entry points take {sorted(_EVENT_KEYS)})")
        event_subscription(spec)  # checks kinds and filters
    elif spec.trigger_type == "webhook":
        unknown = set(config) - _WEBHOOK_KEYS
        if unknown:
            raise EntryPointError(f"{where}: unknown trigger_config keys {sorted(unknown)} "
                                  f"(webhook entry points take {sorted(_WEBHOOK_KEYS)})")
        webhook_route(spec)


def _names(value: object, where: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list | tuple | set | frozenset) and all(
            isinstance(item, str) for item in value):
        return list(value)
    raise EntryPointError(f"{where} must be a str or a list of str, got {value!r}")


def event_subscription(spec: EntryPoint) -> dict[str, Any]:
    """The ``bus.subscribe`` filter options of an ``event`` entry point."""
    config = spec.trigger_config
    where = f"entry point {spec.id!r}: trigger_config"
    kinds: list[str] = []
    for name in (*_names(config.get("kinds"), f"{where}.kinds"),
                 *_names(config.get("event_types"), f"{where}.event_types")):
        kind = HIVE_TYPE_TO_KIND.get(name, name)  # Hive's EventType values work too
        try:
            validate_kind(kind)
        except ValueError as error:
            raise EntryPointError(f"{where}: {error}") from None
        kinds.append(kind)
    prefixes = _names(config.get("kind_prefix"), f"{where}.kind_prefix")
    if not kinds and not prefixes:
        raise EntryPointError(f"{where}: an event entry point needs 'kinds' (or "
                              "'event_types') or 'kind_prefix'")
    options: dict[str, Any] = {}
    if kinds:
        options["kinds"] = kinds
    if prefixes:
        options["kind_prefix"] = prefixes
    for key, aliases in (("stream_id", ("stream_id", "filter_stream")),
                         ("node_id", ("node_id", "filter_node")), ("agent", ("agent",))):
        for alias in aliases:
            value = config.get(alias)
            if value is not None:
                if not isinstance(value, str):
                    raise EntryPointError(f"{where}.{alias} must be a str, got {value!r}")
                options[key] = value
    extra = config.get("filter")
    if extra is not None:
        if not isinstance(extra, EventFilter):
            raise EntryPointError(f"{where}.filter must be an EventFilter, got {extra!r}")
        options["filter"] = extra
    return options


def webhook_route(spec: EntryPoint) -> WebhookRoute:
    """The HTTP route of a ``webhook`` entry point."""
    from .webhook_app import WebhookRoute
    from .webhook_signatures import DEFAULT_TOLERANCE

    config = spec.trigger_config
    where = f"entry point {spec.id!r}: trigger_config"
    path = config.get("path", f"/webhooks/{spec.id}")
    if not isinstance(path, str) or not path.startswith("/") or "?" in path:
        raise EntryPointError(f"{where}.path must start with '/' and have no query, "
                              f"got {path!r}")
    methods = tuple(m.upper() for m in _names(config.get("methods", ["POST"]),
                                              f"{where}.methods"))
    if not methods:
        raise EntryPointError(f"{where}.methods must not be empty")
    secret = config.get("secret")
    token = config.get("token")
    for name, value in (("secret", secret), ("token", token)):
        if value is not None and (not isinstance(value, str) or not value):
            raise EntryPointError(f"{where}.{name} must be a non-empty str")
    tolerance = config.get("tolerance", DEFAULT_TOLERANCE)
    if isinstance(tolerance, bool) or not _positive_number(tolerance):
        raise EntryPointError(f"{where}.tolerance must be a number of seconds > 0, "
                              f"got {tolerance!r}")
    route = WebhookRoute(path=path, entry_point=spec.id, methods=methods, secret=secret,
                         token=token, signature=config.get("signature"),
                         tolerance=float(tolerance))
    try:
        route.check()
    except ValueError as error:
        raise EntryPointError(f"entry point {spec.id!r}: {error}") from None
    return route
