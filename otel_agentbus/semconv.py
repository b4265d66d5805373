"""Every attribute, span, event and metric name the project emits, in one versioned table.

The GenAI conventions are still "Development" status and moved repositories in 2026; the
constants in ``opentelemetry-semantic-conventions`` are deprecated. Keeping our own table
means a rename upstream is one edit here, and the names table of ``docs/names.md`` is
generated from ``NAME_TABLE`` below (``python -m otel_agentbus.semconv_table``).
Names under ``agentbus.`` are the project's own: no convention covers graph nodes,
iterations or decisions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

SCHEMA_VERSION: Final = "0.2.0"
"""Bumped whenever a name below changes; exported as the instrumentation scope version."""

SCHEMA_URL: Final = "https://opentelemetry.io/schemas/1.41.1"
"""The instrumentation scope's schema URL: the general conventions release the GenAI
conventions' text builds on (they link ``error.type`` and the recording-errors rules there)."""

GENAI_CONVENTIONS: Final = "semantic-conventions-genai (Development), as of 2026-11"

INSTRUMENTATION_SCOPE: Final = "otel_agentbus"

# ---------------------------------------------------------------- GenAI attributes
GEN_AI_OPERATION_NAME: Final = "gen_ai.operation.name"
GEN_AI_AGENT_NAME: Final = "gen_ai.agent.name"
GEN_AI_WORKFLOW_NAME: Final = "gen_ai.workflow.name"
GEN_AI_CONVERSATION_ID: Final = "gen_ai.conversation.id"
GEN_AI_PROVIDER_NAME: Final = "gen_ai.provider.name"
GEN_AI_REQUEST_MODEL: Final = "gen_ai.request.model"
GEN_AI_RESPONSE_MODEL: Final = "gen_ai.response.model"
GEN_AI_RESPONSE_FINISH_REASONS: Final = "gen_ai.response.finish_reasons"
GEN_AI_RESPONSE_ID: Final = "gen_ai.response.id"
GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK: Final = "gen_ai.response.time_to_first_chunk"
"""Seconds from the request to the first streamed chunk (text or reasoning)."""
GEN_AI_REQUEST_STREAM: Final = "gen_ai.request.stream"
GEN_AI_REQUEST_TEMPERATURE: Final = "gen_ai.request.temperature"
GEN_AI_REQUEST_MAX_TOKENS: Final = "gen_ai.request.max_tokens"
GEN_AI_REQUEST_TOP_P: Final = "gen_ai.request.top_p"
GEN_AI_REQUEST_TOP_K: Final = "gen_ai.request.top_k"
GEN_AI_REQUEST_FREQUENCY_PENALTY: Final = "gen_ai.request.frequency_penalty"
GEN_AI_REQUEST_PRESENCE_PENALTY: Final = "gen_ai.request.presence_penalty"
GEN_AI_REQUEST_STOP_SEQUENCES: Final = "gen_ai.request.stop_sequences"
GEN_AI_REQUEST_SEED: Final = "gen_ai.request.seed"
GEN_AI_USAGE_INPUT_TOKENS: Final = "gen_ai.usage.input_tokens"
GEN_AI_USAGE_OUTPUT_TOKENS: Final = "gen_ai.usage.output_tokens"
GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: Final = "gen_ai.usage.cache_read.input_tokens"
GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS: Final = "gen_ai.usage.cache_creation.input_tokens"
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
GEN_AI_TOOL_DEFINITIONS: Final = "gen_ai.tool.definitions"
ERROR_TYPE: Final = "error.type"
ERROR_TYPE_FALLBACK: Final = "_OTHER"

# Operation names (values of gen_ai.operation.name) and span name prefixes.
OP_INVOKE_AGENT: Final = "invoke_agent"
OP_INVOKE_WORKFLOW: Final = "invoke_workflow"
OP_EXECUTE_TOOL: Final = "execute_tool"
OP_CHAT: Final = "chat"

# ---------------------------------------------------------------- OpenInference (viewers)
# Arize Phoenix and Arize type spans and show content from OpenInference's attributes;
# they ride along with the GenAI ones above, never instead of them.
OPENINFERENCE_SPAN_KIND: Final = "openinference.span.kind"
OI_AGENT: Final = "AGENT"
OI_CHAIN: Final = "CHAIN"
OI_LLM: Final = "LLM"
OI_TOOL: Final = "TOOL"
INPUT_VALUE: Final = "input.value"
INPUT_MIME_TYPE: Final = "input.mime_type"
OUTPUT_VALUE: Final = "output.value"
OUTPUT_MIME_TYPE: Final = "output.mime_type"
# An LLM span's messages go as the GenAI attributes only: Phoenix derives OpenInference's
# ``llm.input_messages.*`` / ``llm.output_messages.*`` from them itself.

CONTENT_ATTRIBUTES: Final = frozenset({
    GEN_AI_TOOL_CALL_ARGUMENTS, GEN_AI_TOOL_CALL_RESULT, GEN_AI_INPUT_MESSAGES,
    GEN_AI_OUTPUT_MESSAGES, GEN_AI_SYSTEM_INSTRUCTIONS, GEN_AI_TOOL_DEFINITIONS,
    INPUT_VALUE, INPUT_MIME_TYPE, OUTPUT_VALUE, OUTPUT_MIME_TYPE,
})

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
EVENT_SEQ: Final = "agentbus.event.seq"
EVENT_BRIDGED: Final = "agentbus.bridged"
"""An event attribute (not exported): the event describes a span another instrumentation
exported already (the GenAI bridge, pydantic-ai's own spans); the mirror records its metrics
and builds no span for it."""
END_REASON: Final = "agentbus.span.end_reason"
"""Why a span ended without its own end event: run_ended, cancelled, timeout, shutdown."""
SPAN_PENDING: Final = "agentbus.span.pending"
"""True on the early "pending" record of a span that is still open."""
PENDING_SPAN_PREFIX: Final = "agentbus.pending"
"""The pending record's name is this, a space, and the name of the span it stands for."""
LLM_CHUNKS: Final = "agentbus.llm.chunks"
LLM_REASONING_CHUNKS: Final = "agentbus.llm.reasoning_chunks"
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
# Span events carry the rest of their event's payload under these prefixes (content keys
# only with capture on, secret-looking keys as ``[redacted]``).
EVENT_PAYLOAD_PREFIX: Final = "agentbus."
DECISION_PAYLOAD_PREFIX: Final = "agentbus.decision."
OUTCOME_PAYLOAD_PREFIX: Final = "agentbus.outcome."
PROBLEM_PAYLOAD_PREFIX: Final = "agentbus.problem."
PAYLOAD_KEY: Final = "{payload key}"
"""Stands for the payload's own key in the names table's patterns."""

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
BUS_NAME: Final = "agentbus.bus"
SUBSCRIBER_NAME: Final = "agentbus.subscriber"

DURATION_BUCKETS: Final = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12,
                           10.24, 20.48, 40.96, 81.92)
TOKEN_BUCKETS: Final = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576,
                        4194304, 16777216, 67108864)


# ---------------------------------------------------------------- the documented table
NameKind = Literal["attribute", "span name", "span event", "metric"]


@dataclass(frozen=True, slots=True)
class NameGroup:
    """Names that travel together, what kind of name they are, and where they appear.

    One row of the names table (docs/names.md); ``where`` is markdown. Whether a name is a
    convention's or the project's own follows from its prefix (``convention_of``).
    """

    names: tuple[str, ...]
    kind: NameKind
    where: str
    exported: bool = True
    """False for names that stay in-process (bus event attributes): the names test checks
    they never reach a span."""


NAME_TABLE: Final[tuple[NameGroup, ...]] = (
    NameGroup((GEN_AI_OPERATION_NAME,), "attribute",
              f"every span of a run: `{OP_INVOKE_AGENT}` (the run), `{OP_INVOKE_WORKFLOW}` "
              f"(node and iteration spans), `{OP_CHAT}`, `{OP_EXECUTE_TOOL}`. A graph node runs "
              "a loop of LLM calls, decisions and tool calls: the conventions' \"coordinated "
              "process composed of ... operations involving generative AI\", so it and each "
              f"pass of its loop are `{OP_INVOKE_WORKFLOW}`; `plan` would claim planning the "
              "bus cannot tell apart from any other step, and no convention names an agent "
              "step. Node and iteration spans keep their names (`node {id}`, `iteration {id}`)"),
    NameGroup((GEN_AI_WORKFLOW_NAME,), "attribute",
              "node and iteration spans: the node id (a static, low-cardinality name)"),
    NameGroup((GEN_AI_AGENT_NAME,), "attribute",
              "run span (on every span of the run, and a label of the tool and LLM metrics)"),
    NameGroup((GEN_AI_CONVERSATION_ID,), "attribute",
              "every span of a run whose scope has a `session_id` (never invented)"),
    NameGroup((GEN_AI_PROVIDER_NAME, GEN_AI_REQUEST_MODEL), "attribute",
              f"`{OP_CHAT}` span; run span when the run start names them or every LLM call of "
              "the run used the same one"),
    NameGroup((GEN_AI_RESPONSE_MODEL, GEN_AI_RESPONSE_ID, GEN_AI_RESPONSE_FINISH_REASONS,
               GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK), "attribute",
              f"`{OP_CHAT}` span; time to first chunk in seconds (it replaces the project's "
              "own `agentbus.llm.time_to_first_chunk_ms`)"),
    NameGroup((GEN_AI_REQUEST_TEMPERATURE, GEN_AI_REQUEST_MAX_TOKENS, GEN_AI_REQUEST_TOP_P,
               GEN_AI_REQUEST_TOP_K, GEN_AI_REQUEST_FREQUENCY_PENALTY,
               GEN_AI_REQUEST_PRESENCE_PENALTY, GEN_AI_REQUEST_STOP_SEQUENCES,
               GEN_AI_REQUEST_SEED, GEN_AI_REQUEST_STREAM), "attribute",
              f"`{OP_CHAT}` span: the settings the request event carries; `stream` is also "
              "true when chunks arrived"),
    NameGroup((GEN_AI_USAGE_INPUT_TOKENS, GEN_AI_USAGE_OUTPUT_TOKENS,
               GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS, GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS,
               GEN_AI_USAGE_REASONING_OUTPUT_TOKENS),
              "attribute", f"`{OP_CHAT}` span (token usage); run span: the sum over the run's "
              "LLM calls"),
    NameGroup((GEN_AI_TOOL_NAME, GEN_AI_TOOL_CALL_ID, GEN_AI_TOOL_TYPE, GEN_AI_TOOL_DESCRIPTION),
              "attribute", f"`{OP_EXECUTE_TOOL}` span"),
    NameGroup((GEN_AI_INPUT_MESSAGES, GEN_AI_OUTPUT_MESSAGES, GEN_AI_SYSTEM_INSTRUCTIONS,
               GEN_AI_TOOL_DEFINITIONS), "attribute",
              f"content on the run and `{OP_CHAT}` spans, only when capture is switched on: "
              "JSON in the conventions' role/parts message schema (the run's input as a user "
              "message, its output as an assistant message)"),
    NameGroup((GEN_AI_TOOL_CALL_ARGUMENTS, GEN_AI_TOOL_CALL_RESULT), "attribute",
              f"content on the `{OP_EXECUTE_TOOL}` span, only when capture is switched on"),
    NameGroup((GEN_AI_TOKEN_TYPE,), "attribute",
              f"label of `{METRIC_TOKEN_USAGE}`: `input` or `output`"),
    NameGroup((ERROR_TYPE,), "attribute",
              f"failed spans (`{ERROR_TYPE_FALLBACK}` when unknown, `{STATUS_CANCELLED}` for "
              "cancelled runs)"),
    NameGroup((OPENINFERENCE_SPAN_KIND,), "attribute",
              f"viewer-specific (OpenInference: Arize Phoenix, Arize), on every span: "
              f"`{OI_AGENT}` run, `{OI_CHAIN}` node, iteration, event batch and pending "
              f"record, `{OI_LLM}` chat, `{OI_TOOL}` tool"),
    NameGroup((INPUT_VALUE, INPUT_MIME_TYPE, OUTPUT_VALUE, OUTPUT_MIME_TYPE), "attribute",
              "viewer-specific (OpenInference), only when capture is switched on: the run's "
              "and the tool call's input and output as Phoenix shows them (Phoenix derives "
              "an LLM span's messages from the GenAI attributes itself)"),
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
    NameGroup((LLM_CHUNKS, LLM_REASONING_CHUNKS), "attribute",
              f"`{OP_CHAT}` span (deltas aggregated, never a span or event each)"),
    NameGroup((END_REASON, EVENTS_BATCH), "attribute",
              "spans ended without their end event (run_ended, cancelled, timeout, shutdown); "
              "`agentbus.events` batch spans"),
    NameGroup((SPAN_PENDING,), "attribute",
              "the pending record of an open run (with the run's id, agent and conversation)"),
    NameGroup((PENDING_SPAN_PREFIX,), "span name",
              "prefix of the pending record's name (`agentbus.pending invoke_agent {agent}`): "
              "a zero-length child of the run span, exported as soon as the run starts so "
              "backends show the run in progress; no `gen_ai.operation.name` and "
              f"`{OPENINFERENCE_SPAN_KIND}` `{OI_CHAIN}`, so no backend counts a second agent "
              "span"),
    NameGroup((EVENT_SEQ,), "attribute", "every span event"),
    NameGroup((EVENT_BRIDGED,), "attribute",
              "bus event attribute, never exported: the event stands for a span another "
              "instrumentation exported (the GenAI bridge, pydantic-ai's own spans); the mirror "
              "records its metrics and builds no span", exported=False),
    NameGroup((DECISION_ID, DECISION_INTENT, DECISION_OPTIONS, DECISION_CHOSEN,
               DECISION_REASONING), "attribute", f"`{EV_DECISION}` span events"),
    NameGroup((DECISION_PAYLOAD_PREFIX + PAYLOAD_KEY, OUTCOME_PAYLOAD_PREFIX + PAYLOAD_KEY,
               PROBLEM_PAYLOAD_PREFIX + PAYLOAD_KEY, EVENT_PAYLOAD_PREFIX + PAYLOAD_KEY),
              "attribute",
              f"span events: the rest of the event's payload (`{EV_DECISION}`, "
              f"`{EV_OUTCOME}`, `{EV_PROBLEM}`, then every other kind), content keys only "
              "with capture on, secret-looking keys as `[redacted]`"),
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
    NameGroup((BUS_NAME, SUBSCRIBER_NAME), "attribute",
              f"labels of the bus health metrics: the bus's name, and the subscriber's on "
              f"`{METRIC_QUEUE_DEPTH}`"),
    NameGroup((METRIC_EXPORT_SPANS, METRIC_MEASUREMENTS_DROPPED), "metric",
              "export health: spans by `outcome` (exported, failed, dropped); measurements "
              "dropped before collection"),
)

_CONVENTIONS: Final = (
    ("gen_ai.", "GenAI semconv"),
    ("error.", "OTel semconv"),
    ("openinference.", "OpenInference"),
    ("input.", "OpenInference"),
    ("output.", "OpenInference"),
    ("agentbus.", "project"),
)


def convention_of(name: str) -> str:
    """Who defines ``name``: a semantic convention or the project (from its prefix)."""
    for prefix, owner in _CONVENTIONS:
        if name.startswith(prefix):
            return owner
    raise ValueError(f"{name!r} has no known prefix ({', '.join(p for p, _ in _CONVENTIONS)})")
