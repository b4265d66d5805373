"""Every attribute, span, event and metric name the project emits, in one versioned table.

The GenAI conventions are still "Development" status and moved repositories in 2026; the
constants in ``opentelemetry-semantic-conventions`` are deprecated. Keeping our own table
means a rename upstream is one edit here, and the README's table is generated from
``NAME_TABLE`` below (``python -m otel_agentbus.semconv_table``).
Names under ``agentbus.`` are the project's own: no convention covers graph nodes,
iterations or decisions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

SCHEMA_VERSION: Final = "0.1.0"
"""Bumped whenever a name below changes; exported as the instrumentation scope version."""

GENAI_CONVENTIONS: Final = "semantic-conventions-genai (Development), as of 2026-11"

INSTRUMENTATION_SCOPE: Final = "otel_agentbus"

# ---------------------------------------------------------------- GenAI attributes
GEN_AI_OPERATION_NAME: Final = "gen_ai.operation.name"
GEN_AI_AGENT_NAME: Final = "gen_ai.agent.name"
GEN_AI_AGENT_ID: Final = "gen_ai.agent.id"
GEN_AI_CONVERSATION_ID: Final = "gen_ai.conversation.id"
GEN_AI_PROVIDER_NAME: Final = "gen_ai.provider.name"
GEN_AI_REQUEST_MODEL: Final = "gen_ai.request.model"
GEN_AI_RESPONSE_MODEL: Final = "gen_ai.response.model"
GEN_AI_RESPONSE_FINISH_REASONS: Final = "gen_ai.response.finish_reasons"
GEN_AI_USAGE_INPUT_TOKENS: Final = "gen_ai.usage.input_tokens"
GEN_AI_USAGE_OUTPUT_TOKENS: Final = "gen_ai.usage.output_tokens"
GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: Final = "gen_ai.usage.cache_read.input_tokens"
GEN_AI_USAGE_REASONING_OUTPUT_TOKENS: Final = "gen_ai.usage.reasoning.output_tokens"
GEN_AI_TOKEN_TYPE: Final = "gen_ai.token.type"
GEN_AI_TOOL_NAME: Final = "gen_ai.tool.name"
GEN_AI_TOOL_CALL_ID: Final = "gen_ai.tool.call.id"
GEN_AI_TOOL_TYPE: Final = "gen_ai.tool.type"
GEN_AI_TOOL_DESCRIPTION: Final = "gen_ai.tool.description"
# Content: exported only when capture is switched on.
GEN_AI_TOOL_CALL_ARGUMENTS: Final = "gen_ai.tool.call.arguments"
GEN_AI_TOOL_CALL_RESULT: Final = "gen_ai.tool.call.result"
GEN_AI_INPUT_MESSAGES: Final = "gen_ai.input.messages"
GEN_AI_OUTPUT_MESSAGES: Final = "gen_ai.output.messages"
GEN_AI_SYSTEM_INSTRUCTIONS: Final = "gen_ai.system_instructions"
CONTENT_ATTRIBUTES: Final = frozenset({
    GEN_AI_TOOL_CALL_ARGUMENTS, GEN_AI_TOOL_CALL_RESULT, GEN_AI_INPUT_MESSAGES,
    GEN_AI_OUTPUT_MESSAGES, GEN_AI_SYSTEM_INSTRUCTIONS,
})
ERROR_TYPE: Final = "error.type"
ERROR_TYPE_FALLBACK: Final = "_OTHER"

# Operation names (values of gen_ai.operation.name) and span name prefixes.
OP_INVOKE_AGENT: Final = "invoke_agent"
OP_INVOKE_WORKFLOW: Final = "invoke_workflow"
OP_EXECUTE_TOOL: Final = "execute_tool"
OP_CHAT: Final = "chat"

# ---------------------------------------------------------------- project attributes
RUN_ID: Final = "agentbus.run.id"
RUN_STATUS: Final = "agentbus.run.status"
STREAM_ID: Final = "agentbus.stream.id"
NODE_ID: Final = "agentbus.node.id"
NODE_ITERATION: Final = "agentbus.node.iteration"
NODE_ITERATIONS: Final = "agentbus.node.iterations"
NODE_MAX_ITERATIONS: Final = "agentbus.node.max_iterations"
GRAPH_ID: Final = "agentbus.graph.id"
TURN_ID: Final = "agentbus.turn.id"
EVENT_KIND: Final = "agentbus.event.kind"
EVENT_SEQ: Final = "agentbus.event.seq"
EVENT_ID: Final = "agentbus.event.id"
EVENT_BRIDGED: Final = "agentbus.bridged"
"""An event attribute (not exported): the event describes a span another instrumentation
exported already (the GenAI bridge, pydantic-ai's own spans); the mirror records its metrics
and builds no span for it."""
END_REASON: Final = "agentbus.span.end_reason"
"""Why a span ended without its own end event: run_ended, cancelled, timeout, shutdown."""
SPAN_PENDING: Final = "agentbus.span.pending"
"""True on the early "pending" record of a span that is still open."""
LLM_CHUNKS: Final = "agentbus.llm.chunks"
LLM_REASONING_CHUNKS: Final = "agentbus.llm.reasoning_chunks"
LLM_TIME_TO_FIRST_CHUNK: Final = "agentbus.llm.time_to_first_chunk_ms"
EVENTS_BATCH: Final = "agentbus.span.events_batch"
"""On an ``agentbus.events`` child span: which batch of its parent's events it holds."""

# Routing scope and correlation of seed 004 (PicoClaw), on the run span and span events.
RUNTIME_ID: Final = "agentbus.runtime.id"
CHANNEL_NAME: Final = "agentbus.channel.name"
CHANNEL_ACCOUNT: Final = "agentbus.channel.account"
CHAT_ID: Final = "agentbus.chat.id"
CHAT_TYPE: Final = "agentbus.chat.type"
CHAT_TOPIC_ID: Final = "agentbus.chat.topic_id"
SPACE_ID: Final = "agentbus.space.id"
SPACE_TYPE: Final = "agentbus.space.type"
SENDER_ID: Final = "agentbus.sender.id"
MESSAGE_ID: Final = "agentbus.message.id"
PARENT_TURN_ID: Final = "agentbus.turn.parent_id"
REPLY_TO_ID: Final = "agentbus.message.reply_to_id"

# Span event names.
EV_DECISION: Final = "agentbus.decision"
EV_OUTCOME: Final = "agentbus.outcome"
EV_PROBLEM: Final = "agentbus.problem"
DECISION_ID: Final = "agentbus.decision.id"
DECISION_INTENT: Final = "agentbus.decision.intent"
DECISION_OPTIONS: Final = "agentbus.decision.options"
DECISION_CHOSEN: Final = "agentbus.decision.chosen"
DECISION_REASONING: Final = "agentbus.decision.reasoning"

# Run statuses (values of agentbus.run.status).
STATUS_COMPLETED: Final = "completed"
STATUS_FAILED: Final = "failed"
STATUS_CANCELLED: Final = "cancelled"

# ---------------------------------------------------------------- metrics
METRIC_OPERATION_DURATION: Final = "gen_ai.client.operation.duration"
METRIC_TOKEN_USAGE: Final = "gen_ai.client.token.usage"
METRIC_RUNS: Final = "agentbus.runs"
METRIC_RUN_DURATION: Final = "agentbus.run.duration"
METRIC_TOOL_CALLS: Final = "agentbus.tool.calls"
METRIC_TOOL_DURATION: Final = "agentbus.tool.duration"
METRIC_DECISIONS: Final = "agentbus.decisions"
METRIC_VIOLATIONS: Final = "agentbus.constraint.violations"
METRIC_DOOM_LOOPS: Final = "agentbus.doom_loops"
METRIC_BUS_PUBLISHED: Final = "agentbus.bus.published"
METRIC_BUS_DROPPED: Final = "agentbus.bus.dropped"
METRIC_BUS_FAILED: Final = "agentbus.bus.failed"
METRIC_QUEUE_DEPTH: Final = "agentbus.subscriber.queue_depth"
METRIC_EXPORT_SPANS: Final = "agentbus.export.spans"
"""Spans by ``outcome``: exported, failed (the backend refused or was unreachable)."""
METRIC_MEASUREMENTS_DROPPED: Final = "agentbus.metrics.dropped"

DURATION_BUCKETS: Final = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12,
                           10.24, 20.48, 40.96, 81.92)
TOKEN_BUCKETS: Final = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576,
                        4194304, 16777216, 67108864)


# ---------------------------------------------------------------- the documented table
NameKind = Literal["attribute", "span event", "metric"]


@dataclass(frozen=True, slots=True)
class NameGroup:
    """Names that travel together, what kind of name they are, and where they appear.

    One row of the README's names table; ``where`` is markdown. Whether a name is a
    convention's or the project's own follows from its prefix (``convention_of``).
    """

    names: tuple[str, ...]
    kind: NameKind
    where: str


NAME_TABLE: Final[tuple[NameGroup, ...]] = (
    NameGroup((GEN_AI_OPERATION_NAME,), "attribute",
              f"every GenAI span: `{OP_INVOKE_AGENT}`, `{OP_CHAT}`, `{OP_EXECUTE_TOOL}`"),
    NameGroup((GEN_AI_AGENT_NAME, GEN_AI_AGENT_ID), "attribute",
              f"run span (`{GEN_AI_AGENT_NAME}` on every span of the run, and a label of the "
              "tool and LLM metrics)"),
    NameGroup((GEN_AI_CONVERSATION_ID,), "attribute",
              "every span of a run whose scope has a `session_id` (never invented)"),
    NameGroup((GEN_AI_PROVIDER_NAME, GEN_AI_REQUEST_MODEL, GEN_AI_RESPONSE_MODEL,
               GEN_AI_RESPONSE_FINISH_REASONS), "attribute", f"`{OP_CHAT}` span"),
    NameGroup((GEN_AI_USAGE_INPUT_TOKENS, GEN_AI_USAGE_OUTPUT_TOKENS,
               GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS, GEN_AI_USAGE_REASONING_OUTPUT_TOKENS),
              "attribute", f"`{OP_CHAT}` span (token usage)"),
    NameGroup((GEN_AI_TOOL_NAME, GEN_AI_TOOL_CALL_ID, GEN_AI_TOOL_TYPE, GEN_AI_TOOL_DESCRIPTION),
              "attribute", f"`{OP_EXECUTE_TOOL}` span"),
    NameGroup((GEN_AI_TOOL_CALL_ARGUMENTS, GEN_AI_TOOL_CALL_RESULT, GEN_AI_INPUT_MESSAGES,
               GEN_AI_OUTPUT_MESSAGES, GEN_AI_SYSTEM_INSTRUCTIONS), "attribute",
              f"content on the `{OP_EXECUTE_TOOL}` and `{OP_CHAT}` spans, only when capture "
              "is switched on"),
    NameGroup((GEN_AI_TOKEN_TYPE,), "attribute",
              f"label of `{METRIC_TOKEN_USAGE}`: `input` or `output`"),
    NameGroup((ERROR_TYPE,), "attribute",
              f"failed spans (`{ERROR_TYPE_FALLBACK}` when unknown, `{STATUS_CANCELLED}` for "
              "cancelled runs)"),
    NameGroup((RUN_ID, RUN_STATUS, STREAM_ID, GRAPH_ID, TURN_ID), "attribute",
              f"run span (`{RUN_ID}` on all its spans); `{RUN_STATUS}` is "
              f"`{STATUS_COMPLETED}`, `{STATUS_FAILED}` or `{STATUS_CANCELLED}`"),
    NameGroup((RUNTIME_ID, CHANNEL_NAME, CHANNEL_ACCOUNT, CHAT_ID, CHAT_TYPE, CHAT_TOPIC_ID,
               SPACE_ID, SPACE_TYPE, SENDER_ID, MESSAGE_ID, PARENT_TURN_ID, REPLY_TO_ID),
              "attribute",
              "run span and span events whose scope (or correlation) carries the routing "
              "fields of PicoClaw's events package (seed 004)"),
    NameGroup((NODE_ID, NODE_ITERATION, NODE_ITERATIONS, NODE_MAX_ITERATIONS), "attribute",
              "node and iteration spans"),
    NameGroup((LLM_CHUNKS, LLM_REASONING_CHUNKS, LLM_TIME_TO_FIRST_CHUNK), "attribute",
              f"`{OP_CHAT}` span (deltas aggregated, never a span or event each)"),
    NameGroup((END_REASON, SPAN_PENDING, EVENTS_BATCH), "attribute",
              "spans ended without their end event (run_ended, cancelled, timeout, shutdown); "
              "the early pending record of an open span; `agentbus.events` batch spans"),
    NameGroup((EVENT_KIND, EVENT_SEQ, EVENT_ID), "attribute", "every span event"),
    NameGroup((EVENT_BRIDGED,), "attribute",
              "bus event attribute, never exported: the event stands for a span another "
              "instrumentation exported (the GenAI bridge, pydantic-ai's own spans); the mirror "
              "records its metrics and builds no span"),
    NameGroup((DECISION_ID, DECISION_INTENT, DECISION_OPTIONS, DECISION_CHOSEN,
               DECISION_REASONING), "attribute", f"`{EV_DECISION}` span events"),
    NameGroup((EV_DECISION, EV_OUTCOME, EV_PROBLEM), "span event",
              "on the innermost open span (the tool call they name, else the node's iteration, "
              "else the run); other kinds become span events named after the kind"),
    NameGroup((METRIC_OPERATION_DURATION, METRIC_TOKEN_USAGE), "metric",
              f"per LLM call: duration in s, tokens by `{GEN_AI_TOKEN_TYPE}`"),
    NameGroup((METRIC_RUNS, METRIC_RUN_DURATION), "metric",
              f"per run, by agent and `{RUN_STATUS}`"),
    NameGroup((METRIC_TOOL_CALLS, METRIC_TOOL_DURATION), "metric",
              "per tool call, by tool and status"),
    NameGroup((METRIC_DECISIONS, METRIC_VIOLATIONS, METRIC_DOOM_LOOPS), "metric",
              "decisions, constraint violations and doom loops counted"),
    NameGroup((METRIC_BUS_PUBLISHED, METRIC_BUS_DROPPED, METRIC_BUS_FAILED, METRIC_QUEUE_DEPTH),
              "metric", "bus health, read from `bus.stats()`"),
    NameGroup((METRIC_EXPORT_SPANS, METRIC_MEASUREMENTS_DROPPED), "metric",
              "export health: spans by `outcome` (exported, failed, dropped); measurements "
              "dropped before collection"),
)

_CONVENTIONS: Final = (
    ("gen_ai.", "GenAI semconv"),
    ("error.", "OTel semconv"),
    ("agentbus.", "project"),
)


def convention_of(name: str) -> str:
    """Who defines ``name``: a semantic convention or the project (from its prefix)."""
    for prefix, owner in _CONVENTIONS:
        if name.startswith(prefix):
            return owner
    raise ValueError(f"{name!r} has no known prefix ({', '.join(p for p, _ in _CONVENTIONS)})")
