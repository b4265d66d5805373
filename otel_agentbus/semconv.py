"""Every attribute, span, event and metric name the project emits, in one versioned table.

The GenAI conventions are still "Development" status and moved repositories in 2026; the
constants in ``opentelemetry-semantic-conventions`` are deprecated. Keeping our own table
means a rename upstream is one edit here, and the README's table is generated from it.
Names under ``agentbus.`` are the project's own: no convention covers graph nodes,
iterations or decisions.
"""

from __future__ import annotations

from typing import Final

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
