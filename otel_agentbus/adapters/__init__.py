"""Framework adapters: instrument an existing agent without rewriting it.

One module per framework, each behind its own install extra
(``pip install 'otel-agentbus[langgraph]'``), each with idempotent ``install()`` /
``uninstall()`` and an OpenTelemetry ``BaseInstrumentor`` registered under the
``opentelemetry_instrumentor`` entry-point group. Importing this package imports no framework.
"""
