"""The agent runtime from the seeds: AgentRuntime with entry points and webhooks (seed 001),
the decision tracker (seed 003), and the invocation API with ``Control`` (seed 002)."""

from .agent_runtime import AgentRuntime, AgentRuntimeConfig, create_agent_runtime
from .entry_points import EntryPoint, EntryPointSpec
from .execution import ExecutionContext, ExecutionRejectedError, ExecutionResult
from .goals import Constraint, Criterion, Goal, GoalTracker
from .graph import CONTINUE, END, Edge, Graph, Node, NodeStalledError
from .guards import CompactionBreaker, DoomLoopDetector
from .invocation import (
    ANY,
    Control,
    Invocation,
    InvocationCancelled,
    InvocationTimeout,
    ListenerHandle,
)
from .tracker import DecisionTracker
from .tracker_store import InMemoryTrackerStore, SQLiteTrackerStore
from .webhook_app import WebhookApp
from .webhook_signatures import generate_secret, sign_standard, standard_headers
from .webhooks import WebhookRoute, WebhookServer, sign

__all__ = [
    "ANY",
    "CONTINUE",
    "END",
    "AgentRuntime",
    "AgentRuntimeConfig",
    "CompactionBreaker",
    "Constraint",
    "Control",
    "Criterion",
    "DecisionTracker",
    "DoomLoopDetector",
    "Edge",
    "EntryPoint",
    "EntryPointSpec",
    "ExecutionContext",
    "ExecutionRejectedError",
    "ExecutionResult",
    "Goal",
    "GoalTracker",
    "Graph",
    "InMemoryTrackerStore",
    "Invocation",
    "InvocationCancelled",
    "InvocationTimeout",
    "ListenerHandle",
    "Node",
    "NodeStalledError",
    "SQLiteTrackerStore",
    "WebhookApp",
    "WebhookRoute",
    "WebhookServer",
    "create_agent_runtime",
    "generate_secret",
    "sign",
    "sign_standard",
    "standard_headers",
]
