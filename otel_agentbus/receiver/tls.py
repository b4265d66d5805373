"""Who may reach the receiver: TLS for both endpoints, and the rule for non-loopback binds.

One certificate and key serve gRPC and HTTP. They are read and checked once, before either
server binds, so a wrong path or a key that does not match its certificate is one clear
error at start-up, not a failed handshake later. A receiver listening beyond loopback
without a bearer token would store whatever anyone on the network sends; it refuses to
start unless told ``insecure``.
"""

from __future__ import annotations

import ipaddress
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

TOKEN_HINT = ("set --token (or $OTEL_AGENTBUS_RECEIVER_TOKEN), bind to 127.0.0.1, "
              "or pass --insecure to accept anyone")


class TLSConfigError(ValueError):
    """The certificate or key cannot be used; the message names the file and the problem."""


@dataclass(frozen=True, slots=True)
class TLSFiles:
    """A PEM certificate chain and its private key, read and checked by :meth:`load`."""

    cert_file: Path
    key_file: Path
    cert_pem: bytes
    key_pem: bytes

    @classmethod
    def load(cls, cert_file: str | os.PathLike[str], key_file: str | os.PathLike[str]) -> TLSFiles:
        cert_path, key_path = Path(cert_file).absolute(), Path(key_file).absolute()
        pems = []
        for what, path in (("certificate", cert_path), ("key", key_path)):
            try:
                pems.append(path.read_bytes())
            except OSError as exc:
                raise TLSConfigError(f"cannot read TLS {what} {path}: {exc.strerror}") from None
        files = cls(cert_path, key_path, pems[0], pems[1])
        files.server_context()  # a mismatched or malformed pair fails here, named
        return files

    def server_context(self) -> ssl.SSLContext:
        """A server-side context (TLS 1.2 or later) for the HTTP endpoint."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_cert_chain(self.cert_file, self.key_file)
        except ssl.SSLError as exc:
            raise TLSConfigError(
                f"TLS certificate {self.cert_file} and key {self.key_file} do not load "
                f"as a PEM pair: {exc.reason or exc}") from None
        return context


def is_loopback(host: str) -> bool:
    """``localhost`` or a loopback address; any other name may resolve beyond this host."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(addresses: list[str], hosts: list[str], token: str | None,
                   insecure: bool) -> None:
    """Refuse a non-loopback bind without a token, unless ``insecure`` (one-line error)."""
    if token or insecure:
        return
    exposed = [address for address, host in zip(addresses, hosts, strict=True)
               if not is_loopback(host)]
    if exposed:
        raise ValueError(f"refusing to listen on {', '.join(exposed)} without a bearer "
                         f"token: {TOKEN_HINT}")
