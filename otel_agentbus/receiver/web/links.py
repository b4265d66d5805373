"""Links from a run to the same trace in Jaeger and Grafana, when their addresses are known.

Configured by ``--jaeger-url`` / ``--grafana-url`` or the ``OTEL_AGENTBUS_JAEGER_URL`` /
``OTEL_AGENTBUS_GRAFANA_URL`` variables (the ``collector/`` stack serves them at
http://localhost:16686 and http://localhost:3000). Grafana opens Explore on its Tempo data
source, ``tempo`` unless ``OTEL_AGENTBUS_GRAFANA_TEMPO_UID`` names another.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final
from urllib.parse import quote, urlsplit

JAEGER_URL_ENV: Final = "OTEL_AGENTBUS_JAEGER_URL"
GRAFANA_URL_ENV: Final = "OTEL_AGENTBUS_GRAFANA_URL"
GRAFANA_TEMPO_UID_ENV: Final = "OTEL_AGENTBUS_GRAFANA_TEMPO_UID"
DEFAULT_TEMPO_UID: Final = "tempo"
"""The Tempo data source uid ``collector/grafana/provisioning`` gives."""


def check_base_url(url: str, what: str) -> str:
    """``url`` without a trailing slash; ``ValueError`` naming ``what`` unless it is an
    absolute http(s) URL (a ``javascript:`` link must never reach a page)."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{what} must be an http:// or https:// URL, got {url!r}")
    return url.strip().rstrip("/")


@dataclass(frozen=True, slots=True)
class WebLinks:
    jaeger_url: str | None = None
    grafana_url: str | None = None
    grafana_tempo_uid: str = DEFAULT_TEMPO_UID

    def __post_init__(self) -> None:
        if self.jaeger_url is not None:
            object.__setattr__(self, "jaeger_url", check_base_url(self.jaeger_url,
                                                                  "the Jaeger URL"))
        if self.grafana_url is not None:
            object.__setattr__(self, "grafana_url", check_base_url(self.grafana_url,
                                                                   "the Grafana URL"))
        if not self.grafana_tempo_uid.strip():
            raise ValueError("the Grafana Tempo data source uid must not be empty")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *,
                 jaeger_url: str | None = None, grafana_url: str | None = None) -> WebLinks:
        """Arguments first, then the environment variables; empty means unset."""
        env = os.environ if environ is None else environ
        return cls(
            jaeger_url=jaeger_url or env.get(JAEGER_URL_ENV) or None,
            grafana_url=grafana_url or env.get(GRAFANA_URL_ENV) or None,
            grafana_tempo_uid=env.get(GRAFANA_TEMPO_UID_ENV) or DEFAULT_TEMPO_UID,
        )

    def jaeger(self, trace_id: str) -> str | None:
        return None if self.jaeger_url is None else f"{self.jaeger_url}/trace/{trace_id}"

    def grafana(self, trace_id: str) -> str | None:
        """Grafana Explore (10 and newer) with a TraceQL query for the trace id."""
        if self.grafana_url is None:
            return None
        datasource = {"type": "tempo", "uid": self.grafana_tempo_uid}
        panes = {"trace": {
            "datasource": self.grafana_tempo_uid,
            "queries": [{"refId": "A", "datasource": datasource, "queryType": "traceql",
                         "query": trace_id}],
            "range": {"from": "now-24h", "to": "now"},
        }}
        encoded = quote(json.dumps(panes, separators=(",", ":")), safe="")
        return f"{self.grafana_url}/explore?schemaVersion=1&orgId=1&panes={encoded}"
