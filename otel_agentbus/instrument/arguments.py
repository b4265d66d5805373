"""A call's arguments as a JSON payload, bound to the decorated function's signature once
when it is decorated."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from ..payload import REDACTED, is_secret_key
from .values import _to_json as json_data


class _Arguments:
    """Turns a call's arguments into a JSON payload (``self``/``cls`` left out; the values
    of secret-looking parameters, ``api_key`` and the like, as ``"[redacted]"``)."""

    __slots__ = ("_positional", "_required", "_signature", "_simple")

    def __init__(self, function: Callable[..., Any]) -> None:
        try:
            self._signature: inspect.Signature | None = inspect.signature(function)
        except (TypeError, ValueError):
            self._signature = None
        parameters = list(self._signature.parameters.values()) if self._signature else []
        empty = inspect.Parameter.empty
        positional = inspect.Parameter.POSITIONAL_OR_KEYWORD
        self._positional = tuple(p.name for p in parameters if p.kind is positional)
        self._required = sum(1 for p in parameters
                             if p.kind is positional and p.default is empty)
        # Calls with positional arguments only skip ``Signature.bind`` (a few microseconds)
        # when the signature has nothing but plain parameters, none keyword-only required.
        self._simple = self._signature is not None and all(
            p.kind is positional or (p.kind is inspect.Parameter.KEYWORD_ONLY
                                     and p.default is not empty) for p in parameters)

    def __call__(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        if not kwargs and self._simple and self._required <= len(args) <= len(
                self._positional):
            out: dict[str, Any] = {}
            for index, (name, value) in enumerate(zip(self._positional, args, strict=False)):
                if index == 0 and name in ("self", "cls"):
                    continue
                out[name] = REDACTED if is_secret_key(name) else json_data(value)
            return out
        if self._signature is not None:
            try:
                bound = self._signature.bind(*args, **kwargs)
            except TypeError:
                pass
            else:
                out = {}
                parameters = self._signature.parameters
                for index, (name, value) in enumerate(bound.arguments.items()):
                    if index == 0 and name in ("self", "cls"):
                        continue
                    if parameters[name].kind is inspect.Parameter.VAR_KEYWORD:
                        out.update(json_data(value))
                    else:
                        out[name] = REDACTED if is_secret_key(name) else json_data(value)
                return out
        out = json_data(kwargs)
        if args:
            out["args"] = json_data(args)
        return out

    def value(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """The value the call passes for parameter ``name`` (None when it passes none)."""
        if name in kwargs:
            return kwargs[name]
        if self._signature is None or name not in self._signature.parameters:
            return None
        try:
            return self._signature.bind(*args, **kwargs).arguments.get(name)
        except TypeError:
            return None
