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

# (name, delivery, description, hive EventType value)
_TABLE: Final[tuple[tuple[str, Delivery, str, str | None], ...]] = (
    # Run (execution) lifecycle: seed 000 execution_*, seed 002 Run*, seed 004 turn.
    ("agent.run.started", _M, "A run (execution) of an agent started.", "execution_started"),
    ("agent.run.completed", _M, "A run finished successfully.", "execution_completed"),
    ("agent.run.failed", _M, "A run ended with an error.", "execution_failed"),
    ("agent.run.cancelled", _M, "A run was cancelled before it finished.", None),
    ("agent.run.paused", _M, "A run paused (waiting on input or a resume).", "execution_paused"),
    ("agent.run.resumed", _M, "A paused run resumed.", "execution_resumed"),
    ("agent.turn.started", _M, "A conversational turn of an agent started.", None),
    ("agent.turn.ended", _M, "A conversational turn ended.", None),
    ("agent.context.built", _D, "The model context for the next call was assembled.", None),
    ("agent.context.compressed", _M, "The agent's context was compressed.", None),
    ("agent.session.summarized", _M, "A session summary was produced.", None),
    # State and goals.
    ("agent.state.changed", _M, "A state key changed value.", "state_changed"),
    ("agent.state.conflict", _M, "Two writers conflicted on a state key.", "state_conflict"),
    ("agent.goal.progress", _D, "Progress towards the goal was measured.", "goal_progress"),
    ("agent.goal.achieved", _M, "The goal's success criteria were met.", "goal_achieved"),
    ("agent.constraint.violated", _M, "A goal constraint was violated.", "constraint_violation"),
    # Streams (entry points of a runtime).
    ("agent.stream.started", _M, "An execution stream started.", "stream_started"),
    ("agent.stream.stopped", _M, "An execution stream stopped.", "stream_stopped"),
    # Graph node loops.
    ("agent.node.loop.started", _M, "A node's loop started.", "node_loop_started"),
    ("agent.node.loop.iteration", _M, "A node loop iteration started.", "node_loop_iteration"),
    ("agent.node.loop.completed", _M, "A node's loop finished.", "node_loop_completed"),
    ("agent.node.loop.failed", _M, "A node's loop ended with an error.", None),
    ("agent.node.internal_output", _D, "Output of a non client-facing node.",
     "node_internal_output"),
    ("agent.node.input_blocked", _M, "A node is blocked waiting for input.", "node_input_blocked"),
    ("agent.node.stalled", _M, "A node made no progress.", "node_stalled"),
    # LLM calls and streaming.
    ("agent.llm.request", _M, "An LLM request was sent.", None),
    ("agent.llm.response", _M, "An LLM response finished.", None),
    ("agent.llm.failed", _M, "An LLM request failed.", None),
    ("agent.llm.retry", _M, "An LLM request is about to be retried.", None),
    ("agent.llm.delta", _D, "A streamed chunk of LLM text.", "llm_text_delta"),
    ("agent.llm.reasoning.delta", _D, "A streamed chunk of LLM reasoning.",
     "llm_reasoning_delta"),
    ("agent.llm.tool_call.started", _D, "The model began streaming a tool call.", None),
    ("agent.llm.tool_call.delta", _D, "A streamed chunk of tool-call arguments.", None),
    ("agent.llm.tool_call.completed", _D, "The model finished streaming a tool call.", None),
    ("agent.llm.usage", _M, "Token usage was recorded.", None),
    # Tool execution.
    ("agent.tool.call.started", _M, "A tool call started executing.", "tool_call_started"),
    ("agent.tool.call.completed", _M, "A tool call finished (is_error says how).",
     "tool_call_completed"),
    ("agent.tool.call.skipped", _M, "A tool call was skipped.", None),
    # Messages committed to the transcript.
    ("agent.message.assistant.committed", _M, "An assistant message was committed.", None),
    ("agent.message.tool.committed", _M, "A tool result message was committed.", None),
    # Client I/O.
    ("agent.client.output.delta", _D, "Streamed output to the client.", "client_output_delta"),
    ("agent.client.input.requested", _M, "The agent asked the client for input.",
     "client_input_requested"),
    ("agent.client.input.received", _M, "Input from the client reached a node.", None),
    # Steering, interrupts, sub-turns.
    ("agent.steering.injected", _M, "Steering was injected into the context.", None),
    ("agent.follow_up.queued", _M, "Asynchronous follow-up input was queued.", None),
    ("agent.interrupt.received", _M, "A turn interrupt was accepted.", None),
    ("agent.subturn.spawned", _M, "A sub-turn was spawned.", None),
    ("agent.subturn.ended", _M, "A sub-turn ended.", None),
    ("agent.subturn.result_delivered", _M, "A sub-turn result was delivered.", None),
    ("agent.subturn.orphaned", _M, "A sub-turn result could not be delivered.", None),
    # Guards.
    ("agent.doom_loop.detected", _M, "The same action repeated without progress.", None),
    ("agent.compaction.circuit_opened", _M, "Compaction kept failing; its breaker opened.",
     None),
    ("agent.error", _M, "The agent reported an error.", None),
    # Decision tracking (seed 003).
    ("agent.decision.made", _M, "The agent chose among options.", None),
    ("agent.decision.outcome", _M, "The outcome of a decision was recorded.", None),
    ("agent.problem.reported", _M, "The agent reported a problem.", None),
    # Webhooks.
    ("agent.webhook.received", _M, "A webhook request triggered an entry point.", None),
    # PicoClaw channels, bus, gateway and MCP (seed 004).
    ("channel.lifecycle.started", _M, "A channel started.", None),
    ("channel.lifecycle.initialized", _M, "A channel was initialized.", None),
    ("channel.lifecycle.start_failed", _M, "A channel failed to start.", None),
    ("channel.lifecycle.stopped", _M, "A channel stopped.", None),
    ("channel.webhook.registered", _M, "A channel webhook was registered.", None),
    ("channel.webhook.unregistered", _M, "A channel webhook was unregistered.", None),
    ("channel.message.outbound_queued", _D, "An outbound message was queued.", None),
    ("channel.message.outbound_sent", _D, "An outbound message was sent.", None),
    ("channel.message.outbound_failed", _M, "An outbound message failed.", None),
    ("channel.rate_limited", _D, "Rate limiting delayed delivery.", None),
    ("bus.publish.failed", _M, "A message-bus publish failed.", None),
    ("bus.close.started", _M, "A message bus began closing.", None),
    ("bus.close.completed", _M, "A message bus closed.", None),
    ("bus.close.drained", _M, "A closing message bus drained its buffers.", None),
    ("gateway.start", _M, "Gateway start-up reached runtime bootstrap.", None),
    ("gateway.ready", _M, "Gateway services are ready.", None),
    ("gateway.shutdown", _M, "Gateway shutdown started.", None),
    ("gateway.reload.started", _M, "A gateway reload started.", None),
    ("gateway.reload.completed", _M, "A gateway reload completed.", None),
    ("gateway.reload.failed", _M, "A gateway reload failed.", None),
    ("mcp.server.connecting", _M, "Connecting to an MCP server.", None),
    ("mcp.server.connected", _M, "An MCP server connected.", None),
    ("mcp.server.failed", _M, "An MCP server failed.", None),
    ("mcp.tool.discovered", _D, "An MCP tool was discovered.", None),
    ("mcp.tool.call.started", _M, "An MCP tool call started.", None),
    ("mcp.tool.call.completed", _M, "An MCP tool call ended.", None),
    # Free-form events (seed 000 CUSTOM); ``custom.<anything>`` is accepted too.
    ("custom", _D, "A custom event without a more specific kind.", "custom"),
    # ---- added for issue 13 (compat-protocols): seed 002's provider chat stream --------
    # The ``Chat*`` events of a provider's stream are a family of their own, so that a chat
    # text delta can be told from the agent's ``agent.llm.delta``.
    ("chat.started", _M, "A provider chat stream started.", None),
    ("chat.text.delta", _D, "A streamed chunk of chat text from the provider.", None),
    ("chat.tool_call.started", _D, "The provider stream began a tool call.", None),
    ("chat.tool_call.arguments.delta", _D, "A streamed chunk of a tool call's arguments.",
     None),
    ("chat.tool_call.completed", _D, "The provider stream finished a tool call.", None),
    ("chat.finished", _M, "A provider chat stream finished.", None),
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
