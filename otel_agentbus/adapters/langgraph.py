"""LangGraph / LangChain: instrument every graph and runnable without passing callbacks.

``install()`` puts one :class:`AgentBusCallbackHandler` into every LangChain callback
manager as it is made (the way OpenInference and OpenLLMetry reach every runnable: a wrapper
around ``BaseCallbackManager.__init__``), and wraps LangGraph's conditional-edge runner so a
routing choice becomes a decision event with the options the edge had. A graph invocation
is then a run ``invoke_agent {graph}``, each node visit a node loop and iteration, chat
model calls ``chat {model}``, tool calls ``execute_tool {tool}``, subgraphs child runs in
the same trace; errors fail their spans with the cause and report a problem. Sync, async,
``stream`` / ``astream`` and ``astream_events`` all go through the same callbacks.

``pip install 'otel-agentbus[langgraph]'``; with ``opentelemetry-instrument`` the
``langgraph`` instrumentor (:mod:`.langgraph_instrumentor`) calls ``install()`` for an
unchanged app.
"""

from __future__ import annotations

import functools
import threading
from typing import TYPE_CHECKING, Any, Final

from ..bus import EventBus
from ._common import AdapterError, require

if TYPE_CHECKING:
    from ._langgraph_handler import AgentBusCallbackHandler

__all__ = ["MINIMUM", "SUPPORTED_BELOW", "faults", "handler", "install", "installed",
           "uninstall"]

MINIMUM: Final = "1.0"
SUPPORTED_BELOW: Final = "2"
"""The langgraph and langchain-core releases the adapter supports: ``>=1.0,<2``."""

_lock = threading.Lock()
_handler: AgentBusCallbackHandler | None = None
_restore: list[tuple[Any, str, Any]] = []


def _load() -> None:
    """Refuse a missing or unsupported framework, naming the extra and the version."""
    for distribution, module in (("langchain-core", "langchain_core.callbacks"),
                                 ("langgraph", "langgraph.graph")):
        require(module, distribution=distribution, extra="langgraph", minimum=MINIMUM,
                below=SUPPORTED_BELOW)


def install(bus: EventBus | None = None) -> EventBus:
    """Instrument every LangChain runnable and LangGraph graph from now on; returns the bus
    the events go to. ``bus``: else the instrument module's default bus, else a new one
    (which mirrors to the telemetry ``configure()`` set up). Idempotent: a second call
    returns the same bus and changes nothing; a different ``bus`` is refused."""
    global _handler
    _load()
    from ..instrument import get_default_bus
    from ._langgraph_handler import AgentBusCallbackHandler

    with _lock:
        if _handler is not None:
            if bus is not None and bus is not _handler.bus:
                raise AdapterError("the langgraph adapter is installed with another bus: "
                                   "uninstall() first")
            return _handler.bus
        chosen = bus or get_default_bus() or EventBus()
        handler = AgentBusCallbackHandler(chosen)
        _wrap_callback_managers(handler)
        _wrap_branches(handler)
        _handler = handler
        return chosen


def uninstall() -> None:
    """Stop instrumenting: new callback managers no longer get the handler, and the handler
    that managers made earlier still hold ignores their events. Idempotent."""
    global _handler
    with _lock:
        if _handler is None:
            return
        _handler.enabled = False
        for owner, attribute, original in reversed(_restore):
            setattr(owner, attribute, original)
        _restore.clear()
        _handler = None


def installed() -> bool:
    return _handler is not None


def handler() -> AgentBusCallbackHandler | None:
    """The installed callback handler (to pass as ``callbacks=[...]`` where managers are
    made without ``__init__``), if any."""
    return _handler


def faults() -> int:
    """Exceptions raised (and swallowed) inside the adapter's callbacks so far."""
    from ._langgraph_handler import faults as counter

    return counter.count


def _replace(owner: Any, attribute: str, replacement: Any) -> None:
    _restore.append((owner, attribute, owner.__dict__[attribute]))
    setattr(owner, attribute, replacement)


def _wrap_callback_managers(handler: AgentBusCallbackHandler) -> None:
    from langchain_core.callbacks import BaseCallbackManager

    original = BaseCallbackManager.__init__

    @functools.wraps(original)
    def init(self: BaseCallbackManager, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        if handler.enabled and handler not in self.inheritable_handlers:
            self.add_handler(handler, inherit=True)

    _replace(BaseCallbackManager, "__init__", init)


def _wrap_branches(handler: AgentBusCallbackHandler) -> None:
    """LangGraph's branch knows the targets a conditional edge may go to (``ends``) and
    what its path function returned: the decision's options and choice."""
    from langgraph.graph._branch import BranchSpec

    original = BranchSpec._finish

    @functools.wraps(original)
    def finish(self: BranchSpec, writer: Any, input: Any, result: Any, config: Any) -> Any:
        try:
            manager = config.get("callbacks") if isinstance(config, dict) else None
            chosen = result if isinstance(result, list | tuple) else [result]
            handler.route_decided(getattr(manager, "parent_run_id", None),
                                  getattr(self.path, "name", None) or "path", self.ends,
                                  chosen)
        except Exception as error:  # never break the graph over a decision event
            from ._langgraph_handler import faults as counter

            counter.record(error)
        return original(self, writer, input, result, config)

    _replace(BranchSpec, "_finish", finish)
