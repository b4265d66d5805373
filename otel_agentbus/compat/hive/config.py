"""Seed 001's configuration records: ``AgentRuntimeConfig`` and ``EntryPointSpec``, with
the checks that turn a bad value into an error naming it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from ...runtime.webhooks import WebhookRoute
from .bus import EventType

TRIGGER_TYPES: Final = ("manual", "api", "webhook", "event", "timer")
ISOLATION_LEVELS: Final = ("shared", "isolated", "synchronized")
_EVENT_TYPE_VALUES: Final = frozenset(t.value for t in EventType)


@dataclass
class AgentRuntimeConfig:
    """Configuration for AgentRuntime (the seed's fields and defaults)."""

    max_concurrent_executions: int = 100
    """Caps each entry point's ``max_concurrent`` (as in the seed, not a global cap)."""
    cache_ttl: float = 60.0
    batch_interval: float = 0.1
    max_history: int = 1000
    execution_result_max: int = 1000
    execution_result_ttl_seconds: float | None = None
    webhook_host: str = "127.0.0.1"
    webhook_port: int = 8080
    """0 picks a free port (``runtime.webhook_server.port`` tells which)."""
    webhook_routes: list[dict[str, Any]] = field(default_factory=list)
    """Each ``{"source_id": str, "path": str, "methods": ["POST"], "secret": str | None}``."""


@dataclass
class EntryPointSpec:
    """A named way into the agent (Hive's fields; ``trigger_type`` ``manual``, ``api``,
    ``webhook``, ``event`` or ``timer``; ``isolation_level`` ``shared``, ``isolated`` or
    ``synchronized``)."""

    id: str
    name: str
    entry_node: str
    trigger_type: str = "manual"
    trigger_config: dict[str, Any] = field(default_factory=dict)
    isolation_level: str = "shared"
    priority: int = 0
    max_concurrent: int = 10


def check_entry_point(spec: EntryPointSpec) -> None:
    """ValueError naming an unknown trigger type, isolation level or event type (the seed
    finds a bad event type only in ``start``)."""
    if spec.trigger_type not in TRIGGER_TYPES:
        raise ValueError(f"Entry point '{spec.id}': trigger_type must be one of "
                         f"{list(TRIGGER_TYPES)}, got {spec.trigger_type!r}")
    if spec.isolation_level not in ISOLATION_LEVELS:
        raise ValueError(f"Entry point '{spec.id}': isolation_level must be one of "
                         f"{list(ISOLATION_LEVELS)}, got {spec.isolation_level!r}")
    if spec.trigger_type == "event":
        for event_type in spec.trigger_config.get("event_types", []):
            if event_type not in _EVENT_TYPE_VALUES:
                raise ValueError(f"Entry point '{spec.id}': unknown event type "
                                 f"{event_type!r} in trigger_config['event_types']")


def webhook_routes(config: AgentRuntimeConfig) -> list[WebhookRoute]:
    """The routes of ``config.webhook_routes``; ValueError naming a malformed entry (by
    its keys only: a secret never reaches the message)."""
    routes: list[WebhookRoute] = []
    for index, route in enumerate(config.webhook_routes):
        if not isinstance(route, dict) or not isinstance(route.get("source_id"), str) \
                or not isinstance(route.get("path"), str):
            keys = sorted(route) if isinstance(route, dict) else type(route).__name__
            raise ValueError(f"webhook_routes[{index}] needs str 'source_id' and 'path' "
                             f"(got {keys})")
        routes.append(WebhookRoute(
            path=route["path"], entry_point=route["source_id"],
            methods=tuple(m.upper() for m in route.get("methods", ["POST"])),
            secret=route.get("secret")))
    return routes
