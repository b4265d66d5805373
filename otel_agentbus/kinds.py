"""The known event kinds: dotted names, each with a delivery class.

Kinds are plain strings so that publishing costs no enum lookup and so that other
languages' runtimes can use the same names on the wire. The table covers every event
type of the Hive bus (seed 000), the invocation API (seed 002), the decision tracker
(seed 003) and PicoClaw's events package (seed 004). Anything else must start with
``custom.``: an unknown name is almost always a typo, so it is an error.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final


class Delivery(enum.Enum):
    """Whether backpressure may drop an event of a kind.

    ``MUST_DELIVER`` kinds open or close something (a run, a span, a wait); losing one
    would leave a span open forever or a waiter hanging, so no policy drops them.
    """

    DROPPABLE = "droppable"
    MUST_DELIVER = "must_deliver"


@dataclass(frozen=True, slots=True)
class KindInfo:
    """What the project knows about one kind."""

    name: str
    delivery: Delivery
    description: str
    hive_type: str | None = None
    """The seed 000 ``EventType`` value this kind stands for, if any."""


CUSTOM_PREFIX: Final = "custom."
MAX_KIND_LENGTH: Final = 256
"""Custom kinds longer than this are refused (a kind names a span event and a filter key)."""

_M = Delivery.MUST_DELIVER
_D = Delivery.DROPPABLE

# One constant per known kind, named by the kind without its ``agent.`` prefix, upper
# case, dots as underscores (``RUN_STARTED`` is ``"agent.run.started"``). The table
# below is built from them, so a mistyped constant is a NameError, not a silent miss.
RUN_STARTED: Final = "agent.run.started"
RUN_COMPLETED: Final = "agent.run.completed"
RUN_FAILED: Final = "agent.run.failed"
RUN_CANCELLED: Final = "agent.run.cancelled"
RUN_PAUSED: Final = "agent.run.paused"
RUN_RESUMED: Final = "agent.run.resumed"
TURN_STARTED: Final = "agent.turn.started"
TURN_ENDED: Final = "agent.turn.ended"
CONTEXT_BUILT: Final = "agent.context.built"
CONTEXT_COMPRESSED: Final = "agent.context.compressed"
SESSION_SUMMARIZED: Final = "agent.session.summarized"
STATE_CHANGED: Final = "agent.state.changed"
STATE_CONFLICT: Final = "agent.state.conflict"
GOAL_PROGRESS: Final = "agent.goal.progress"
GOAL_ACHIEVED: Final = "agent.goal.achieved"
CONSTRAINT_VIOLATED: Final = "agent.constraint.violated"
STREAM_STARTED: Final = "agent.stream.started"
STREAM_STOPPED: Final = "agent.stream.stopped"
NODE_LOOP_STARTED: Final = "agent.node.loop.started"
NODE_LOOP_ITERATION: Final = "agent.node.loop.iteration"
NODE_LOOP_COMPLETED: Final = "agent.node.loop.completed"
NODE_LOOP_FAILED: Final = "agent.node.loop.failed"
NODE_INTERNAL_OUTPUT: Final = "agent.node.internal_output"
NODE_INPUT_BLOCKED: Final = "agent.node.input_blocked"
NODE_STALLED: Final = "agent.node.stalled"
LLM_REQUEST: Final = "agent.llm.request"
LLM_RESPONSE: Final = "agent.llm.response"
LLM_FAILED: Final = "agent.llm.failed"
LLM_RETRY: Final = "agent.llm.retry"
LLM_DELTA: Final = "agent.llm.delta"
LLM_REASONING_DELTA: Final = "agent.llm.reasoning.delta"
LLM_TOOL_CALL_STARTED: Final = "agent.llm.tool_call.started"
LLM_TOOL_CALL_DELTA: Final = "agent.llm.tool_call.delta"
LLM_TOOL_CALL_COMPLETED: Final = "agent.llm.tool_call.completed"
LLM_USAGE: Final = "agent.llm.usage"
TOOL_CALL_STARTED: Final = "agent.tool.call.started"
TOOL_CALL_COMPLETED: Final = "agent.tool.call.completed"
TOOL_CALL_SKIPPED: Final = "agent.tool.call.skipped"
MESSAGE_ASSISTANT_COMMITTED: Final = "agent.message.assistant.committed"
MESSAGE_TOOL_COMMITTED: Final = "agent.message.tool.committed"
CLIENT_OUTPUT_DELTA: Final = "agent.client.output.delta"
CLIENT_INPUT_REQUESTED: Final = "agent.client.input.requested"
CLIENT_INPUT_RECEIVED: Final = "agent.client.input.received"
STEERING_INJECTED: Final = "agent.steering.injected"
FOLLOW_UP_QUEUED: Final = "agent.follow_up.queued"
INTERRUPT_RECEIVED: Final = "agent.interrupt.received"
SUBTURN_SPAWNED: Final = "agent.subturn.spawned"
SUBTURN_ENDED: Final = "agent.subturn.ended"
SUBTURN_RESULT_DELIVERED: Final = "agent.subturn.result_delivered"
SUBTURN_ORPHANED: Final = "agent.subturn.orphaned"
DOOM_LOOP_DETECTED: Final = "agent.doom_loop.detected"
COMPACTION_CIRCUIT_OPENED: Final = "agent.compaction.circuit_opened"
ERROR: Final = "agent.error"
DECISION_MADE: Final = "agent.decision.made"
DECISION_OUTCOME: Final = "agent.decision.outcome"
PROBLEM_REPORTED: Final = "agent.problem.reported"
WEBHOOK_RECEIVED: Final = "agent.webhook.received"
CHANNEL_LIFECYCLE_STARTED: Final = "channel.lifecycle.started"
CHANNEL_LIFECYCLE_INITIALIZED: Final = "channel.lifecycle.initialized"
CHANNEL_LIFECYCLE_START_FAILED: Final = "channel.lifecycle.start_failed"
CHANNEL_LIFECYCLE_STOPPED: Final = "channel.lifecycle.stopped"
CHANNEL_WEBHOOK_REGISTERED: Final = "channel.webhook.registered"
CHANNEL_WEBHOOK_UNREGISTERED: Final = "channel.webhook.unregistered"
CHANNEL_MESSAGE_OUTBOUND_QUEUED: Final = "channel.message.outbound_queued"
CHANNEL_MESSAGE_OUTBOUND_SENT: Final = "channel.message.outbound_sent"
CHANNEL_MESSAGE_OUTBOUND_FAILED: Final = "channel.message.outbound_failed"
CHANNEL_RATE_LIMITED: Final = "channel.rate_limited"
BUS_PUBLISH_FAILED: Final = "bus.publish.failed"
BUS_CLOSE_STARTED: Final = "bus.close.started"
BUS_CLOSE_COMPLETED: Final = "bus.close.completed"
BUS_CLOSE_DRAINED: Final = "bus.close.drained"
GATEWAY_START: Final = "gateway.start"
GATEWAY_READY: Final = "gateway.ready"
GATEWAY_SHUTDOWN: Final = "gateway.shutdown"
GATEWAY_RELOAD_STARTED: Final = "gateway.reload.started"
GATEWAY_RELOAD_COMPLETED: Final = "gateway.reload.completed"
GATEWAY_RELOAD_FAILED: Final = "gateway.reload.failed"
MCP_SERVER_CONNECTING: Final = "mcp.server.connecting"
MCP_SERVER_CONNECTED: Final = "mcp.server.connected"
MCP_SERVER_FAILED: Final = "mcp.server.failed"
MCP_TOOL_DISCOVERED: Final = "mcp.tool.discovered"
MCP_TOOL_CALL_STARTED: Final = "mcp.tool.call.started"
MCP_TOOL_CALL_COMPLETED: Final = "mcp.tool.call.completed"
CUSTOM: Final = "custom"
# Seed 002's provider chat stream.
CHAT_STARTED: Final = "chat.started"
CHAT_TEXT_DELTA: Final = "chat.text.delta"
CHAT_TOOL_CALL_STARTED: Final = "chat.tool_call.started"
CHAT_TOOL_CALL_ARGUMENTS_DELTA: Final = "chat.tool_call.arguments.delta"
CHAT_TOOL_CALL_COMPLETED: Final = "chat.tool_call.completed"
CHAT_FINISHED: Final = "chat.finished"

# (name, delivery, description, hive EventType value)
_TABLE: Final[tuple[tuple[str, Delivery, str, str | None], ...]] = (
    # Run (execution) lifecycle: seed 000 execution_*, seed 002 Run*, seed 004 turn.
    (RUN_STARTED, _M, "A run (execution) of an agent started.", "execution_started"),
    (RUN_COMPLETED, _M, "A run finished successfully.", "execution_completed"),
    (RUN_FAILED, _M, "A run ended with an error.", "execution_failed"),
    (RUN_CANCELLED, _M, "A run was cancelled before it finished.", None),
    (RUN_PAUSED, _M, "A run paused (waiting on input or a resume).", "execution_paused"),
    (RUN_RESUMED, _M, "A paused run resumed.", "execution_resumed"),
    (TURN_STARTED, _M, "A conversational turn of an agent started.", None),
    (TURN_ENDED, _M, "A conversational turn ended.", None),
    (CONTEXT_BUILT, _D, "The model context for the next call was assembled.", None),
    (CONTEXT_COMPRESSED, _M, "The agent's context was compressed.", None),
    (SESSION_SUMMARIZED, _M, "A session summary was produced.", None),
    # State and goals.
    (STATE_CHANGED, _M, "A state key changed value.", "state_changed"),
    (STATE_CONFLICT, _M, "Two writers conflicted on a state key.", "state_conflict"),
    (GOAL_PROGRESS, _D, "Progress towards the goal was measured.", "goal_progress"),
    (GOAL_ACHIEVED, _M, "The goal's success criteria were met.", "goal_achieved"),
    (CONSTRAINT_VIOLATED, _M, "A goal constraint was violated.", "constraint_violation"),
    # Streams (entry points of a runtime).
    (STREAM_STARTED, _M, "An execution stream started.", "stream_started"),
    (STREAM_STOPPED, _M, "An execution stream stopped.", "stream_stopped"),
    # Graph node loops.
    (NODE_LOOP_STARTED, _M, "A node's loop started.", "node_loop_started"),
    (NODE_LOOP_ITERATION, _M, "A node loop iteration started.", "node_loop_iteration"),
    (NODE_LOOP_COMPLETED, _M, "A node's loop finished.", "node_loop_completed"),
    (NODE_LOOP_FAILED, _M, "A node's loop ended with an error.", None),
    (NODE_INTERNAL_OUTPUT, _D, "Output of a non client-facing node.",
     "node_internal_output"),
    (NODE_INPUT_BLOCKED, _M, "A node is blocked waiting for input.", "node_input_blocked"),
    (NODE_STALLED, _M, "A node made no progress.", "node_stalled"),
    # LLM calls and streaming.
    (LLM_REQUEST, _M, "An LLM request was sent.", None),
    (LLM_RESPONSE, _M, "An LLM response finished.", None),
    (LLM_FAILED, _M, "An LLM request failed.", None),
    (LLM_RETRY, _M, "An LLM request is about to be retried.", None),
    (LLM_DELTA, _D, "A streamed chunk of LLM text.", "llm_text_delta"),
    (LLM_REASONING_DELTA, _D, "A streamed chunk of LLM reasoning.",
     "llm_reasoning_delta"),
    (LLM_TOOL_CALL_STARTED, _D, "The model began streaming a tool call.", None),
    (LLM_TOOL_CALL_DELTA, _D, "A streamed chunk of tool-call arguments.", None),
    (LLM_TOOL_CALL_COMPLETED, _D, "The model finished streaming a tool call.", None),
    (LLM_USAGE, _M, "Token usage was recorded.", None),
    # Tool execution.
    (TOOL_CALL_STARTED, _M, "A tool call started executing.", "tool_call_started"),
    (TOOL_CALL_COMPLETED, _M, "A tool call finished (is_error says how).",
     "tool_call_completed"),
    (TOOL_CALL_SKIPPED, _M, "A tool call was skipped.", None),
    # Messages committed to the transcript.
    (MESSAGE_ASSISTANT_COMMITTED, _M, "An assistant message was committed.", None),
    (MESSAGE_TOOL_COMMITTED, _M, "A tool result message was committed.", None),
    # Client I/O.
    (CLIENT_OUTPUT_DELTA, _D, "Streamed output to the client.", "client_output_delta"),
    (CLIENT_INPUT_REQUESTED, _M, "The agent asked the client for input.",
     "client_input_requested"),
    (CLIENT_INPUT_RECEIVED, _M, "Input from the client reached a node.", None),
    # Steering, interrupts, sub-turns.
    (STEERING_INJECTED, _M, "Steering was injected into the context.", None),
    (FOLLOW_UP_QUEUED, _M, "Asynchronous follow-up input was queued.", None),
    (INTERRUPT_RECEIVED, _M, "A turn interrupt was accepted.", None),
    (SUBTURN_SPAWNED, _M, "A sub-turn was spawned.", None),
    (SUBTURN_ENDED, _M, "A sub-turn ended.", None),
    (SUBTURN_RESULT_DELIVERED, _M, "A sub-turn result was delivered.", None),
    (SUBTURN_ORPHANED, _M, "A sub-turn result could not be delivered.", None),
    # Guards.
    (DOOM_LOOP_DETECTED, _M, "The same action repeated without progress.", None),
    (COMPACTION_CIRCUIT_OPENED, _M, "Compaction kept failing; its breaker opened.",
     None),
    (ERROR, _M, "The agent reported an error.", None),
    # Decision tracking (seed 003).
    (DECISION_MADE, _M, "The agent chose among options.", None),
    (DECISION_OUTCOME, _M, "The outcome of a decision was recorded.", None),
    (PROBLEM_REPORTED, _M, "The agent reported a problem.", None),
    # Webhooks.
    (WEBHOOK_RECEIVED, _M, "A webhook request triggered an entry point.", None),
    # PicoClaw channels, bus, gateway and MCP (seed 004).
    (CHANNEL_LIFECYCLE_STARTED, _M, "A channel started.", None),
    (CHANNEL_LIFECYCLE_INITIALIZED, _M, "A channel was initialized.", None),
    (CHANNEL_LIFECYCLE_START_FAILED, _M, "A channel failed to start.", None),
    (CHANNEL_LIFECYCLE_STOPPED, _M, "A channel stopped.", None),
    (CHANNEL_WEBHOOK_REGISTERED, _M, "A channel webhook was registered.", None),
    (CHANNEL_WEBHOOK_UNREGISTERED, _M, "A channel webhook was unregistered.", None),
    (CHANNEL_MESSAGE_OUTBOUND_QUEUED, _D, "An outbound message was queued.", None),
    (CHANNEL_MESSAGE_OUTBOUND_SENT, _D, "An outbound message was sent.", None),
    (CHANNEL_MESSAGE_OUTBOUND_FAILED, _M, "An outbound message failed.", None),
    (CHANNEL_RATE_LIMITED, _D, "Rate limiting delayed delivery.", None),
    (BUS_PUBLISH_FAILED, _M, "A message-bus publish failed.", None),
    (BUS_CLOSE_STARTED, _M, "A message bus began closing.", None),
    (BUS_CLOSE_COMPLETED, _M, "A message bus closed.", None),
    (BUS_CLOSE_DRAINED, _M, "A closing message bus drained its buffers.", None),
    (GATEWAY_START, _M, "Gateway start-up reached runtime bootstrap.", None),
    (GATEWAY_READY, _M, "Gateway services are ready.", None),
    (GATEWAY_SHUTDOWN, _M, "Gateway shutdown started.", None),
    (GATEWAY_RELOAD_STARTED, _M, "A gateway reload started.", None),
    (GATEWAY_RELOAD_COMPLETED, _M, "A gateway reload completed.", None),
    (GATEWAY_RELOAD_FAILED, _M, "A gateway reload failed.", None),
    (MCP_SERVER_CONNECTING, _M, "Connecting to an MCP server.", None),
    (MCP_SERVER_CONNECTED, _M, "An MCP server connected.", None),
    (MCP_SERVER_FAILED, _M, "An MCP server failed.", None),
    (MCP_TOOL_DISCOVERED, _D, "An MCP tool was discovered.", None),
    (MCP_TOOL_CALL_STARTED, _M, "An MCP tool call started.", None),
    (MCP_TOOL_CALL_COMPLETED, _M, "An MCP tool call ended.", None),
    # Free-form events (seed 000 CUSTOM); ``custom.<anything>`` is accepted too.
    (CUSTOM, _D, "A custom event without a more specific kind.", "custom"),
    # Seed 002's provider chat stream: the ``Chat*`` events of a provider's stream are a
    # family of their own, so that a chat text delta can be told from ``agent.llm.delta``.
    (CHAT_STARTED, _M, "A provider chat stream started.", None),
    (CHAT_TEXT_DELTA, _D, "A streamed chunk of chat text from the provider.", None),
    (CHAT_TOOL_CALL_STARTED, _D, "The provider stream began a tool call.", None),
    (CHAT_TOOL_CALL_ARGUMENTS_DELTA, _D, "A streamed chunk of a tool call's arguments.",
     None),
    (CHAT_TOOL_CALL_COMPLETED, _D, "The provider stream finished a tool call.", None),
    (CHAT_FINISHED, _M, "A provider chat stream finished.", None),
)

# ---- added for issue 13 (compat-protocols): seed 004's own names for table kinds ----------
KIND_ALIASES: Final[dict[str, str]] = {
    "agent.turn.start": "agent.turn.started",
    "agent.turn.end": "agent.turn.ended",
    "agent.context.compress": "agent.context.compressed",
    "agent.session.summarize": "agent.session.summarized",
    "agent.tool.exec_start": "agent.tool.call.started",
    "agent.tool.exec_end": "agent.tool.call.completed",
    "agent.tool.exec_skipped": "agent.tool.call.skipped",
    "agent.subturn.spawn": "agent.subturn.spawned",
    "agent.subturn.end": "agent.subturn.ended",
    "agent.subturn.orphan": "agent.subturn.orphaned",
    "mcp.tool.call.start": "mcp.tool.call.started",
    "mcp.tool.call.end": "mcp.tool.call.completed",
}
"""PicoClaw's kind strings (seed 004) that name a kind of the table differently.

``Event`` and the filters accept them and store the table's name, so a PicoClaw tool
execution is an ``agent.tool.call.started`` event (and an ``execute_tool`` span) like any
other; :mod:`otel_agentbus.compat.picoclaw` shows PicoClaw code its own names again."""

KNOWN_KINDS: Final[dict[str, KindInfo]] = {
    name: KindInfo(name, delivery, description, hive)
    for name, delivery, description, hive in _TABLE
}

_CUSTOM_INFO: Final = KindInfo("custom.*", Delivery.DROPPABLE, "An application-defined kind.")

MUST_DELIVER_KINDS: Final[frozenset[str]] = frozenset(
    name for name, info in KNOWN_KINDS.items() if info.delivery is Delivery.MUST_DELIVER
)

HIVE_TYPE_TO_KIND: Final[dict[str, str]] = {
    info.hive_type: name for name, info in KNOWN_KINDS.items() if info.hive_type is not None
}


class UnknownKindError(ValueError):
    """An event kind that is neither known nor under ``custom.``."""


def kind_info(kind: str) -> KindInfo:
    """The table entry for ``kind``; raises :class:`UnknownKindError` for a typo."""
    info = KNOWN_KINDS.get(kind)
    if info is not None:
        return info
    return KNOWN_KINDS.get(validate_kind(kind), _CUSTOM_INFO)


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def validate_kind(kind: object) -> str:
    """Return ``kind`` if it may be published (the table's name for an alias in
    :data:`KIND_ALIASES`), else raise a clear error."""
    if type(kind) is not str:
        raise UnknownKindError(f"event kind must be a str, got {type(kind).__name__}")
    if kind in KNOWN_KINDS:
        return kind
    alias = KIND_ALIASES.get(kind)
    if alias is not None:
        return alias
    if kind.startswith(CUSTOM_PREFIX) and len(kind) > len(CUSTOM_PREFIX):
        if len(kind) > MAX_KIND_LENGTH:
            raise UnknownKindError(f"custom event kind {kind[:40]!r}... is {len(kind)} "
                                   f"characters long; the limit is {MAX_KIND_LENGTH}")
        if not kind.isascii() and not _encodable(kind):
            raise UnknownKindError(f"custom event kind {kind!r} is not valid Unicode "
                                   "(it holds a lone surrogate)")
        if any(not part for part in kind.split(".")):
            raise UnknownKindError(f"custom event kind {kind!r} has an empty dotted segment")
        return kind
    raise UnknownKindError(
        f"unknown event kind {kind!r}: use one of otel_agentbus.kinds.KNOWN_KINDS "
        f"or an application kind starting with {CUSTOM_PREFIX!r}"
    )


def is_must_deliver(kind: str) -> bool:
    """True for kinds that backpressure never drops."""
    return kind in MUST_DELIVER_KINDS


def known_kinds() -> list[str]:
    """Every built-in kind name, in table order."""
    return list(KNOWN_KINDS)
