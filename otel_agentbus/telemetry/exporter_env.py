"""Which exporters each signal gets and where OTLP sends it, from arguments and ``OTEL_*``.

One resolution for ``configure()`` and the demo, written from the OTLP exporter and SDK
environment-variable specifications, so that an argument and the variable it stands for
behave the same. The SDK exporters then get explicit values: their own reading of the
same variables (which differs from the specification in places, e.g. a per-signal
``_INSECURE`` or an ``http://`` endpoint with ``OTEL_EXPORTER_OTLP_INSECURE=false``) never
decides. What they still read themselves: timeouts, compression and certificates.

Precedence, for each signal: the argument, then ``OTEL_EXPORTER_OTLP_<SIGNAL>_*``, then
``OTEL_EXPORTER_OTLP_*``. An endpoint from ``endpoint=`` or ``OTEL_EXPORTER_OTLP_ENDPOINT``
is a base URL (OTLP/HTTP appends ``v1/traces``, ``v1/metrics``, ``v1/logs``); a per-signal
endpoint is used as it is.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, Literal
from urllib.parse import unquote, urlsplit

logger = logging.getLogger("otel_agentbus.telemetry")

Signal = Literal["traces", "metrics", "logs"]
SIGNALS: Final[tuple[Signal, ...]] = ("traces", "metrics", "logs")
ExporterName = Literal["otlp", "console", "none"]
Protocol = Literal["grpc", "http/protobuf"]
EXPORTERS: Final = ("otlp", "console")
PROTOCOLS: Final = ("grpc", "http/protobuf")
DEFAULT_PROTOCOL: Final[Protocol] = "grpc"
"""Our default (the specification prefers http/protobuf but allows keeping an existing
grpc default, which this package had from its first release)."""
DEFAULT_GRPC_ENDPOINT: Final = "http://localhost:4317"
DEFAULT_HTTP_ENDPOINT: Final = "http://localhost:4318/"

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


class ExporterSettingError(ValueError):
    """A setting that cannot work; the message names the argument or variable and the fix.

    ``configure()`` raises it as its ``ConfigurationError`` (a subclass of this)."""


@dataclass(frozen=True, slots=True)
class OtlpTarget:
    """Where one signal's OTLP exporter sends, as handed to the SDK exporter."""

    protocol: Protocol
    endpoint: str
    """gRPC: the target as given (scheme optional); HTTP: the full URL to POST to."""
    endpoint_source: str
    """The argument or variable the endpoint came from ("default" when none did)."""
    insecure: bool
    """gRPC only: plaintext rather than TLS."""
    headers: dict[str, str] = field(repr=False)
    """Sent with every export; kept out of ``repr()`` (they often carry a token)."""
    tls_by_default: bool = False
    """gRPC to an endpoint without a scheme, nothing saying whether it is insecure: TLS,
    as the specification says (worth a warning: a plaintext collector then never gets
    a span)."""

    @property
    def tls(self) -> bool:
        if self.protocol == "grpc":
            return not self.insecure
        return self.endpoint.lower().startswith("https://")


@dataclass(frozen=True, slots=True)
class SignalExport:
    """One signal's exporters (``()``: nothing exported) and, with OTLP, its target."""

    signal: Signal
    exporters: tuple[str, ...]
    exporters_source: str
    otlp: OtlpTarget | None


def env(name: str) -> str | None:
    """A variable's value; empty counts as unset (the specification says so)."""
    value = os.environ.get(name)
    return value.strip() if value and value.strip() else None


def _signal_var(signal: Signal, what: str) -> str:
    return f"OTEL_EXPORTER_OTLP_{signal.upper()}_{what}"


def setting(source: str, value: str) -> str:
    """How a message shows a setting: ``endpoint='x'`` for an argument, ``VAR='x'``."""
    return f"{source}{value!r}" if source.endswith("=") else f"{source}={value!r}"


def _first(*candidates: tuple[str, str | None]) -> tuple[str, str] | None:
    """The first (source, value) whose value is set."""
    for source, value in candidates:
        if value is not None:
            return source, value
    return None


def parse_exporters(value: str, source: str) -> tuple[str, ...]:
    """``"otlp,console"`` → ``("otlp", "console")``; ``"none"`` → ``()``.

    Unknown names raise, as the SDK's own auto-configuration does (the specification
    asks for a warning and the setting ignored, which would silently export nothing)."""
    names: list[str] = []
    for raw in value.split(","):
        name = raw.strip().lower()
        if name and name not in names:
            names.append(name)
    if names == ["none"]:
        return ()
    if "none" in names:
        raise ExporterSettingError(
            f"{setting(source, value)}: 'none' cannot be combined with other exporters")
    for name in names:
        if name not in EXPORTERS:
            raise ExporterSettingError(
                f"exporter {name!r} is not supported ({setting(source, value)}): use 'otlp', "
                "'console' or 'none' (a comma-separated list for several)")
    return tuple(names)


def parse_headers(value: str, source: str) -> dict[str, str]:
    """``key1=value1,key2=value2`` (W3C Baggage format, values URL-decoded). A bad pair
    raises naming the variable and its position, never its value (it may hold a token)."""
    headers: dict[str, str] = {}
    for position, pair in enumerate(value.split(","), start=1):
        if not pair.strip():
            continue
        key, sep, item = pair.partition("=")
        key = unquote(key).strip().lower()
        if not sep or not key:
            raise ExporterSettingError(
                f"{source}: entry {position} is not key=value (expected key1=value1,key2=value2)")
        headers[key] = unquote(item).strip()
    return headers


def parse_bool(value: str | None, source: str) -> bool | None:
    """The specification's Boolean: only ``true`` (any case) is true; other values than
    ``false`` log a warning and count as false; unset is None."""
    if value is None:
        return None
    lowered = value.strip().lower()
    if lowered not in ("true", "false"):
        logger.warning("%s=%r is not 'true' or 'false': taken as false", source, value)
    return lowered == "true"


def resolve_protocol(signal: Signal, protocol: str | None) -> Protocol:
    found = _first(("protocol=", protocol),
                   (_signal_var(signal, "PROTOCOL"), env(_signal_var(signal, "PROTOCOL"))),
                   ("OTEL_EXPORTER_OTLP_PROTOCOL", env("OTEL_EXPORTER_OTLP_PROTOCOL")))
    if found is None:
        return DEFAULT_PROTOCOL
    source, value = found
    chosen = value.strip().lower()
    if chosen not in PROTOCOLS:
        raise ExporterSettingError(
            f"OTLP protocol {value!r} is not supported ({source}): use 'grpc' or "
            "'http/protobuf'")
    return chosen  # type: ignore[return-value]


def endpoint_setting(signal: Signal, endpoint: str | None) -> tuple[str, str, bool] | None:
    """(source, value, is_base) of the endpoint that applies to ``signal``, if any."""
    if endpoint is not None and endpoint.strip():
        return "endpoint=", endpoint.strip(), True
    per_signal = env(_signal_var(signal, "ENDPOINT"))
    if per_signal is not None:
        return _signal_var(signal, "ENDPOINT"), per_signal, False
    generic = env("OTEL_EXPORTER_OTLP_ENDPOINT")
    if generic is not None:
        return "OTEL_EXPORTER_OTLP_ENDPOINT", generic, True
    return None


def has_scheme(endpoint: str) -> bool:
    return bool(_SCHEME.match(endpoint))


def _http_url(signal: Signal, source: str, value: str, is_base: bool) -> str:
    if not has_scheme(value):
        raise ExporterSettingError(
            f"{setting(source, value)} has no scheme: OTLP/HTTP needs a URL, e.g. "
            f"http://{value} (plaintext) or https://{value} (TLS)")
    scheme = urlsplit(value).scheme.lower()
    if scheme not in ("http", "https"):
        raise ExporterSettingError(
            f"{setting(source, value)}: OTLP/HTTP needs an http:// or https:// URL")
    if not is_base:
        return value  # per-signal: as it is
    path = urlsplit(value).path.rstrip("/")
    for other in SIGNALS:
        if path.endswith(f"/v1/{other}"):
            _warn_once(
                f"{setting(source, value)} already ends with /v1/{other}, and OTLP/HTTP appends "
                f"v1/{signal} to a base endpoint: for a full URL use "
                f"{_signal_var(signal, 'ENDPOINT')}")
            break
    return value.rstrip("/") + f"/v1/{signal}"


def _grpc_insecure(signal: Signal, value: str, insecure: bool | None) -> tuple[bool, bool]:
    """(insecure, defaulted): the scheme decides when there is one; else the argument,
    the per-signal then the generic ``_INSECURE`` variable, else TLS (the default)."""
    if has_scheme(value):
        scheme = value.split("://", 1)[0].lower()
        if scheme == "https":
            return False, False
        if scheme == "http":
            return True, False
    chosen = insecure
    if chosen is None:
        name = _signal_var(signal, "INSECURE")
        chosen = parse_bool(env(name), name)
    if chosen is None:
        chosen = parse_bool(env("OTEL_EXPORTER_OTLP_INSECURE"), "OTEL_EXPORTER_OTLP_INSECURE")
    if chosen is None:
        return False, True
    return chosen, False


def resolve_target(signal: Signal, *, endpoint: str | None = None, protocol: str | None = None,
                   headers: Mapping[str, str] | None = None,
                   insecure: bool | None = None) -> OtlpTarget:
    """Where ``signal`` goes over OTLP (see the module docstring for the precedence)."""
    chosen_protocol = resolve_protocol(signal, protocol)
    found = endpoint_setting(signal, endpoint)
    if found is None:
        source, value, is_base = "default", (
            DEFAULT_GRPC_ENDPOINT if chosen_protocol == "grpc" else DEFAULT_HTTP_ENDPOINT), True
    else:
        source, value, is_base = found
    if chosen_protocol == "grpc":
        plaintext, defaulted = _grpc_insecure(signal, value, insecure)
        url = value
    else:
        plaintext = defaulted = False
        url = _http_url(signal, source, value, is_base)
    if headers is not None:
        header_values = dict(headers)
    else:
        header_found = _first(
            (_signal_var(signal, "HEADERS"), env(_signal_var(signal, "HEADERS"))),
            ("OTEL_EXPORTER_OTLP_HEADERS", env("OTEL_EXPORTER_OTLP_HEADERS")))
        header_values = parse_headers(header_found[1], header_found[0]) if header_found else {}
    return OtlpTarget(protocol=chosen_protocol, endpoint=url, endpoint_source=source,
                      insecure=plaintext, headers=header_values, tls_by_default=defaulted)


def warn_tls_by_default(target: OtlpTarget) -> None:
    """Once per endpoint: it has no scheme, so OTLP/gRPC uses TLS."""
    if target.tls_by_default:
        value = target.endpoint
        _warn_once(f"{setting(target.endpoint_source, value)} has no scheme: OTLP/gRPC then uses "
                   f"TLS (the specification's default); write https://{value} to say so, or "
                   f"http://{value} (or set OTEL_EXPORTER_OTLP_INSECURE=true) for plaintext")


def resolve_exporters(signal: Signal, exporter: str | None, *,
                      follows: tuple[tuple[str, ...], str] | None = None,
                      endpoint: str | None = None) -> tuple[tuple[str, ...], str]:
    """(exporters, source) for ``signal``: the argument, else ``OTEL_<SIGNAL>_EXPORTER``,
    else what ``follows`` says (metrics and logs follow an explicit traces choice), else
    OTLP when an endpoint applies to this signal and nothing when none does."""
    if exporter is not None:
        argument = "exporter=" if signal == "traces" else f"{signal}_exporter="
        return parse_exporters(exporter, argument), argument
    name = f"OTEL_{signal.upper()}_EXPORTER"
    value = env(name)
    if value is not None:
        return parse_exporters(value, name), name
    if follows is not None:
        return follows
    if endpoint_setting(signal, endpoint) is not None:
        return ("otlp",), "an OTLP endpoint is set"
    return (), "no exporter and no OTLP endpoint set"


def resolve_signal(signal: Signal, exporter: str | None, *,
                   follows: tuple[tuple[str, ...], str] | None = None,
                   endpoint: str | None = None, protocol: str | None = None,
                   headers: Mapping[str, str] | None = None,
                   insecure: bool | None = None) -> SignalExport:
    """Everything about one signal's export."""
    exporters, source = resolve_exporters(signal, exporter, follows=follows, endpoint=endpoint)
    target = (resolve_target(signal, endpoint=endpoint, protocol=protocol, headers=headers,
                             insecure=insecure) if "otlp" in exporters else None)
    return SignalExport(signal=signal, exporters=exporters, exporters_source=source,
                        otlp=target)


_warned: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        logger.warning("%s", message)
