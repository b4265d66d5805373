"""Hive's API (seeds 000, 001 and 003) running on otel-agentbus: switch the imports only.

- :mod:`.bus`: ``EventBus``, ``EventType``, ``AgentEvent`` (seed 000), over our bus;
- :mod:`.runtime`: ``AgentRuntime``, ``AgentRuntimeConfig``, ``create_agent_runtime``,
  ``EntryPointSpec`` (seed 001), over :class:`otel_agentbus.runtime.AgentRuntime`;
- :mod:`.tracker`: ``StreamDecisionTracker``, ``StreamRuntimeAdapter`` (seed 003), over
  :class:`otel_agentbus.runtime.DecisionTracker`;
- :mod:`.outcomes`: the ``OutcomeAggregator`` both report to; :mod:`.state`,
  :mod:`.storage` and :mod:`.sessions`: the shared state and what ``storage_path`` holds;
  :mod:`.config`, :mod:`.nodes`, :mod:`.records`, :mod:`.observability`: the runtime's
  records, how graph nodes run, the tracker's run record, ``set_trace_context``.

So every execution and every tracked run is a run on the bus, and a trace once telemetry
is attached. ``docs/conformance-hive.md`` lists each seed name and where it differs.
"""

from .bus import AgentEvent, EventBus, EventHandler, EventType, Subscription
from .outcomes import OutcomeAggregator
from .runtime import (
    AgentRuntime,
    AgentRuntimeConfig,
    EntryPointSpec,
    ExecutionResult,
    ExecutionStream,
    create_agent_runtime,
)
from .state import SharedStateManager
from .storage import ConcurrentStorage, RuntimeLogStore, SessionStore
from .tracker import (
    Decision,
    DecisionType,
    Option,
    Outcome,
    Problem,
    Run,
    RunStatus,
    StreamDecisionTracker,
    StreamRuntime,
    StreamRuntimeAdapter,
    get_trace_context,
    set_trace_context,
)

__all__ = [
    "AgentEvent",
    "AgentRuntime",
    "AgentRuntimeConfig",
    "ConcurrentStorage",
    "Decision",
    "DecisionType",
    "EntryPointSpec",
    "EventBus",
    "EventHandler",
    "EventType",
    "ExecutionResult",
    "ExecutionStream",
    "Option",
    "Outcome",
    "OutcomeAggregator",
    "Problem",
    "Run",
    "RunStatus",
    "RuntimeLogStore",
    "SessionStore",
    "SharedStateManager",
    "StreamDecisionTracker",
    "StreamRuntime",
    "StreamRuntimeAdapter",
    "Subscription",
    "create_agent_runtime",
    "get_trace_context",
    "set_trace_context",
]
