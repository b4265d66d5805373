"""The ``otel-agentbus`` command line.

Each subcommand is one ``_add_<name>_parser(subparsers)`` that registers its
options and ``handler``, plus one ``_cmd_<name>(args) -> int``. Add a command
by writing that pair and listing the adder in :data:`_PARSER_ADDERS`.

Output read by a consumer that stops early (``otel-agentbus runs | head``) ends quietly
with exit status 0, as the reader got what it asked for: no ``BrokenPipeError``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import signal
import sqlite3
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the receiver's modules load on use, so --help stays quick
    from .receiver.web.links import WebLinks
    from .receiver.web.server import WebServer

DEFAULT_DB = "./agentbus.db"
EXIT_USAGE = 2  # bad input: missing database, unknown trace, bad address
EXIT_FAILURE = 1  # the environment failed us: port taken, I/O error

_Subparsers = Any  # argparse's _SubParsersAction is private


def _error(message: str) -> None:
    print(f"otel-agentbus: error: {message}", file=sys.stderr)


def _query_error(exc: Exception) -> int:
    """Map query-layer exceptions to a message and an exit code."""
    from .receiver.queries import NotAReceiverDatabase, TraceNotFoundError

    if isinstance(exc, FileNotFoundError):
        _error(f"receiver database not found: {exc.filename}")
        return EXIT_USAGE
    if isinstance(exc, TraceNotFoundError | NotAReceiverDatabase | ValueError):
        _error(str(exc))
        return EXIT_USAGE
    _error(f"cannot read database: {exc}")
    return EXIT_FAILURE


def _address(text: str) -> str:
    from .receiver.server import split_host_port

    try:
        split_host_port(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("must be positive")
    return value


def _duration(text: str) -> float | None:
    from .receiver.retention import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _size(text: str) -> int | None:
    from .receiver.retention import parse_size

    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError("must be positive")
    return value


def _add_db_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", default=DEFAULT_DB, help="receiver SQLite database")


def _check_db_for_writing(db: str) -> bool:
    """Report a ``--db`` that must not be created or written to (missing directory, a
    directory, a non-SQLite or foreign SQLite file) before anything touches it."""
    from .receiver.db_check import DatabasePathError, check_writable

    try:
        check_writable(db)
    except DatabasePathError as exc:
        _error(str(exc))
        return False
    return True


# ---- receiver -------------------------------------------------------------------


def _add_receiver_parser(subparsers: _Subparsers) -> None:
    from .receiver.retention import DEFAULT_INTERVAL_S, DEFAULT_MAX_DB_SIZE, DEFAULT_RETENTION_S
    from .receiver.server import (
        DEFAULT_GRPC_ADDR,
        DEFAULT_HTTP_ADDR,
        DEFAULT_MAX_BODY,
        TOKEN_ENV,
    )

    p = subparsers.add_parser(
        "receiver",
        help="run an embedded OTLP receiver (gRPC + HTTP) storing into SQLite",
        description="Run an OTLP receiver until SIGINT/SIGTERM. Prints one JSON line with the "
        "bound addresses once listening (port 0 picks a free port).",
    )
    p.add_argument("--grpc", type=_address, default=DEFAULT_GRPC_ADDR, metavar="HOST:PORT",
                   help="OTLP/gRPC listen address")
    p.add_argument("--http", type=_address, default=DEFAULT_HTTP_ADDR, metavar="HOST:PORT",
                   help="OTLP/HTTP listen address")
    _add_db_option(p)
    p.add_argument(
        "--token",
        default=None,
        help=f"require 'Authorization: Bearer TOKEN' (default: ${TOKEN_ENV})",
    )
    p.add_argument(
        "--ready-file", type=Path, default=None, help="also write the ready JSON line here"
    )
    p.add_argument(
        "--max-body",
        type=_positive_int,
        default=DEFAULT_MAX_BODY,
        metavar="BYTES",
        help="largest accepted request body",
    )
    p.add_argument(
        "--grace", type=float, default=2.0, help="seconds to finish in-flight requests on stop"
    )
    p.add_argument(
        "--tls-cert", type=Path, default=None, metavar="PEM",
        help="serve gRPC and HTTP over TLS with this certificate chain (needs --tls-key)",
    )
    p.add_argument("--tls-key", type=Path, default=None, metavar="PEM",
                   help="the private key of --tls-cert")
    p.add_argument(
        "--insecure", action="store_true",
        help="allow a non-loopback --grpc/--http address without --token",
    )
    p.add_argument(
        "--no-web", action="store_true",
        help="do not serve the web view (runs list, trace waterfall) on the HTTP listener")
    _add_link_options(p)
    p.add_argument(
        "--retention", type=_duration, default=DEFAULT_RETENTION_S, metavar="AGE",
        help="delete traces, metric points and logs received longer ago than this: 7d, 12h, "
        "30m, 90s or off (default: 7d)",
    )
    p.add_argument(
        "--max-db-size", type=_size, default=DEFAULT_MAX_DB_SIZE, metavar="SIZE",
        help="cap the database file: the oldest traces are pruned from 90%% of it, and at the "
        "cap exports are refused (HTTP 507, gRPC RESOURCE_EXHAUSTED) until there is room: "
        "2GB, 500MB, 1GiB or off (default: 2GiB)",
    )
    p.add_argument(
        "--prune-interval", type=_positive_float, default=DEFAULT_INTERVAL_S, metavar="SECONDS",
        help=f"how often retention runs (default: {DEFAULT_INTERVAL_S:g}; also whenever the "
        "database is found full)",
    )
    p.set_defaults(handler=_cmd_receiver)


def _write_atomically(path: Path, text: str) -> None:
    # A parent polling for the file must never see it half-written.
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def _stop_on_signal() -> Iterator[threading.Event]:
    """An event set by SIGINT or SIGTERM while the block runs (a server's main loop)."""
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():  # signal() only works there
        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _announce(ready: dict[str, Any], ready_file: Path | None) -> None:
    """The one JSON line a server prints once it listens (and writes to ``ready_file``)."""
    line = json.dumps(ready)
    if ready_file is not None:
        _write_atomically(ready_file, line + "\n")
    with contextlib.suppress(BrokenPipeError):  # nobody reads stdout: keep serving
        print(line, flush=True)


def _add_link_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--jaeger-url", default=None, metavar="URL",
        help="link each run to its trace in this Jaeger UI, e.g. http://localhost:16686 "
        "(default: $OTEL_AGENTBUS_JAEGER_URL)")
    parser.add_argument(
        "--grafana-url", default=None, metavar="URL",
        help="link each run to its trace in this Grafana's Explore (Tempo data source uid "
        "$OTEL_AGENTBUS_GRAFANA_TEMPO_UID, default tempo), e.g. http://localhost:3000 "
        "(default: $OTEL_AGENTBUS_GRAFANA_URL)")


def _web_links(args: argparse.Namespace) -> WebLinks:
    """The links of ``--jaeger-url``/``--grafana-url`` and the environment; ``ValueError``
    for a URL that is not http(s)."""
    from .receiver.web.links import WebLinks

    return WebLinks.from_env(jaeger_url=args.jaeger_url, grafana_url=args.grafana_url)


def _cmd_receiver(args: argparse.Namespace) -> int:
    from .receiver.server import TOKEN_ENV, Receiver

    if not _check_db_for_writing(args.db):
        return EXIT_USAGE
    # gRPC's C core logs a failed bind on stderr before our one-line error; it reads this
    # once, when grpc is first imported (Receiver.start). GRPC_VERBOSITY=debug still works.
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    token = args.token if args.token is not None else os.environ.get(TOKEN_ENV)
    try:
        receiver = Receiver(
            args.db, grpc_addr=args.grpc, http_addr=args.http, token=token,
            max_body=args.max_body, retention=args.retention, max_db_size=args.max_db_size,
            prune_interval=args.prune_interval, tls_cert=args.tls_cert, tls_key=args.tls_key,
            insecure=args.insecure, web=not args.no_web, web_links=_web_links(args),
        )
    except ValueError as exc:  # an exposed bind without a token, an unusable certificate
        _error(str(exc))
        return EXIT_USAGE
    with _stop_on_signal() as stop:
        try:
            receiver.start()
        except (OSError, RuntimeError, sqlite3.Error) as exc:
            _error(f"cannot start receiver: {exc}")
            return EXIT_FAILURE
        try:
            _announce({"grpc": receiver.grpc_address, "http": receiver.http_address,
                       "web": receiver.web_url, "db": str(receiver.db_path)},
                      args.ready_file)
            if receiver.web_url is not None:
                print(f"otel-agentbus receiver: web view at {receiver.web_url}/runs",
                      file=sys.stderr, flush=True)
            while not stop.wait(0.5):
                pass
        finally:
            receiver.stop(grace=args.grace)
    stats = receiver.stats()
    print(
        f"otel-agentbus receiver stopped: {stats.requests} requests "
        f"({stats.rejected} rejected), {stats.spans} spans, {stats.metric_points} metric "
        f"points, {stats.log_records} log records",
        file=sys.stderr,
    )
    pruned = receiver.prune_stats()
    if stats.refused_full or pruned.traces or pruned.metric_points or pruned.log_records:
        print(
            f"otel-agentbus receiver: {stats.refused_full} requests refused for lack of "
            f"space; retention deleted {pruned.traces} traces ({pruned.spans} spans), "
            f"{pruned.metric_points} metric points, {pruned.log_records} log records",
            file=sys.stderr,
        )
    return 0


# ---- runs -----------------------------------------------------------------------


def _add_runs_parser(subparsers: _Subparsers) -> None:
    p = subparsers.add_parser(
        "runs", help="list agent runs stored by the receiver, newest first",
        description="List the agent runs stored by the receiver, newest first (the demo's "
        "table uses the same order).",
    )
    _add_db_option(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _add_web_url_option(p)
    p.set_defaults(handler=_cmd_runs)


def _add_web_url_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--web-url", default=None, metavar="URL",
        help="base URL of a web view of this database, for the printed links (default: "
        "$OTEL_AGENTBUS_WEB_URL, else the receiver serving --db, when one is running)")


def _web_base(args: argparse.Namespace) -> str | None:
    from .receiver.web_url import WEB_URL_ENV, recorded_web_url

    given = args.web_url or os.environ.get(WEB_URL_ENV)
    return given.rstrip("/") if given else recorded_web_url(args.db)


def _browse_hint(args: argparse.Namespace, base: str | None, page: str) -> str:
    """Where to see this in a browser: the page's link, or how to serve one."""
    if base is not None:
        return f"web view: {base}{page}"
    from .demo.runner import cli_command
    from .receiver.web_url import DEFAULT_WEB_ADDR

    return (f"web view: {cli_command()} web --db {shlex.quote(str(args.db))}, then "
            f"http://{DEFAULT_WEB_ADDR}{page}")


def _cmd_runs(args: argparse.Namespace) -> int:
    from .receiver.queries import list_runs
    from .receiver.render import format_runs, newest_first
    from .receiver.web_url import run_link

    try:
        runs = list_runs(args.db)
    except (OSError, ValueError, sqlite3.Error) as exc:
        return _query_error(exc)
    base = _web_base(args)
    if args.json:
        rows = [{**run.to_dict(), "url": None if base is None else run_link(base, run.run_id)}
                for run in newest_first(runs)]
        print(json.dumps({"runs": rows}, indent=2))
    else:
        print(format_runs(runs))
        if runs:
            print(f"\n{_browse_hint(args, base, '/runs')}  (one run: /runs/<RUN ID>)")
    return 0


# ---- trace ----------------------------------------------------------------------


def _add_trace_parser(subparsers: _Subparsers) -> None:
    p = subparsers.add_parser("trace", help="show one trace as a span tree")
    p.add_argument(
        "trace_id", metavar="TRACE",
        help="a trace id, a run id (first column of `runs`), or a unique prefix of either",
    )
    _add_db_option(p)
    p.add_argument("--json", action="store_true", help="print the tree as JSON")
    p.add_argument(
        "--all-attributes",
        action="store_true",
        help="show every span attribute, not only gen_ai.*/agentbus.*/error.*, values "
        "whole and long lines wrapped (by default they are cut at 100 columns)",
    )
    _add_web_url_option(p)
    p.set_defaults(handler=_cmd_trace)


def _cmd_trace(args: argparse.Namespace) -> int:
    from .receiver.queries import get_trace, resolve_trace_id
    from .receiver.render import format_trace, trace_json_chunks
    from .receiver.web_url import trace_link

    try:
        tree = get_trace(args.db, resolve_trace_id(args.db, args.trace_id))
    except (OSError, KeyError, ValueError, sqlite3.Error) as exc:
        return _query_error(exc)
    if args.json:  # written piece by piece: json.dumps recurses once per nesting level
        sys.stdout.writelines(trace_json_chunks(tree))
        print()
    else:
        print(format_trace(tree, all_attributes=args.all_attributes))
        base = _web_base(args)
        if base is not None:
            print(f"\nweb view: {trace_link(base, tree.trace_id)}")
    return 0


# ---- web ------------------------------------------------------------------------


def _add_web_parser(subparsers: _Subparsers) -> None:
    from .receiver.web_url import DEFAULT_WEB_ADDR

    p = subparsers.add_parser(
        "web", help="serve the web view (runs list, trace waterfall) of a receiver database",
        description="Serve the read-only web view of a receiver database until SIGINT/"
        "SIGTERM: the runs list at /runs, a run at /runs/<run id>, a trace at "
        "/traces/<trace id>. A running receiver serves the same view on its HTTP listener; "
        "this is for a database nobody serves (the demo's, a copy). Prints one JSON line "
        "with the URL once listening.",
    )
    _add_db_option(p)
    p.add_argument("--listen", type=_address, default=DEFAULT_WEB_ADDR, metavar="HOST:PORT",
                   help="address to serve on (port 0 picks a free port)")
    p.add_argument("--token", default=None,
                   help="require this token (a login form, or 'Authorization: Bearer "
                   "TOKEN') (default: $OTEL_AGENTBUS_RECEIVER_TOKEN)")
    p.add_argument("--insecure", action="store_true",
                   help="allow a non-loopback --listen address without --token")
    p.add_argument("--ready-file", type=Path, default=None,
                   help="also write the ready JSON line here")
    _add_link_options(p)
    p.set_defaults(handler=_cmd_web)


def _cmd_web(args: argparse.Namespace) -> int:
    from .receiver.server import TOKEN_ENV, split_host_port
    from .receiver.tls import check_exposure
    from .receiver.web.server import WebServer

    token = args.token if args.token is not None else os.environ.get(TOKEN_ENV)
    host, port = split_host_port(args.listen)
    try:
        check_exposure([args.listen], [host], token or None, args.insecure)
        server = WebServer(args.db, (host, port), token=token, links=_web_links(args))
    except FileNotFoundError as exc:
        return _query_error(exc)
    except ValueError as exc:  # exposed without a token, a foreign file, a bad link URL
        _error(str(exc))
        return EXIT_USAGE
    except (OSError, sqlite3.Error) as exc:  # the port is taken, the file unreadable
        _error(f"cannot serve the web view: {exc}")
        return EXIT_FAILURE

    def ready() -> None:
        _announce({"web": server.url, "db": str(Path(args.db).absolute())}, args.ready_file)
        print(f"otel-agentbus web: {server.url}/runs (Ctrl-C to stop)", file=sys.stderr,
              flush=True)

    _serve_web_until_signal(server, ready)
    return 0


def _serve_web_until_signal(server: WebServer, ready: Callable[[], None]) -> None:
    """Start ``server``, say so with ``ready``, serve until SIGINT/SIGTERM, stop."""
    with _stop_on_signal() as stop:
        server.start()
        try:
            ready()
            while not stop.wait(0.5):
                pass
        finally:
            server.stop()


# ---- demo -----------------------------------------------------------------------

DEMO_RUNS = 6
DEMO_SEED = 42


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError("must be a positive number of seconds")
    return value


def _add_demo_parser(subparsers: _Subparsers) -> None:
    from .receiver.web_url import DEFAULT_WEB_ADDR

    p = subparsers.add_parser(
        "demo",
        help="run a few simulated agents through the bus and export their traces over OTLP",
        description="Run a deterministic multi-agent workload (LLM calls, tool calls, "
        "decisions, a failed and a cancelled run) through an EventBus with the telemetry "
        "mirror on. Without --otlp-endpoint, an embedded OTLP receiver is started on a free "
        "loopback port and the stored runs and one span tree are printed. Progress goes to "
        "stderr.",
    )
    p.add_argument(
        "--runs", type=_positive_int, default=DEMO_RUNS, metavar="N",
        help="agent runs, executed concurrently (with 3 or more, one fails and one is "
        "cancelled)",
    )
    p.add_argument(
        "--seed", type=int, default=DEMO_SEED, metavar="N",
        help="the same seed gives the same runs",
    )
    target = p.add_mutually_exclusive_group()
    target.add_argument(
        "--otlp-endpoint", default=None, metavar="URL",
        help="export to this OTLP endpoint (collector, Jaeger, ...) instead of the embedded "
        "receiver, as OTEL_EXPORTER_OTLP_ENDPOINT would: a base URL (over OTLP/HTTP, "
        "/v1/traces is appended); gRPC unless OTEL_EXPORTER_OTLP_PROTOCOL says "
        "http/protobuf. Without it, OTEL_EXPORTER_OTLP_ENDPOINT or "
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT (used as it is) choose the backend when set",
    )
    target.add_argument(
        "--db", default=None, metavar="PATH",
        help="the embedded receiver's database (default: a new temporary file, kept)",
    )
    p.add_argument(
        "--flush-timeout", type=_positive_seconds, default=None, metavar="SECONDS",
        help="at the end, wait this long for the backend to acknowledge every span "
        "(default: 30); spans sent but not acknowledged by then are reported as "
        "unconfirmed, not lost",
    )
    p.add_argument("--json", action="store_true", help="print only a JSON summary on stdout")
    p.add_argument(
        "--serve", nargs="?", const=DEFAULT_WEB_ADDR, default=None, type=_address,
        metavar="HOST:PORT",
        help=f"after the demo, serve its runs in the web view (default address "
        f"{DEFAULT_WEB_ADDR}) until Ctrl-C; embedded receiver only")
    p.set_defaults(handler=_cmd_demo)


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import Progress, format_report, run_demo
    from .demo.runner import DEFAULT_FLUSH_TIMEOUT_S

    if args.db is not None and not _check_db_for_writing(args.db):
        return EXIT_USAGE
    if args.serve is not None and args.otlp_endpoint is not None:
        _error("--serve shows the embedded receiver's runs; it cannot be used with "
               "--otlp-endpoint")
        return EXIT_USAGE
    flush_timeout = args.flush_timeout or DEFAULT_FLUSH_TIMEOUT_S
    try:
        report = run_demo(
            args.runs, args.seed, endpoint=args.otlp_endpoint, db=args.db,
            progress=Progress(args.runs), flush_timeout=flush_timeout,
        )
    except (OSError, RuntimeError, ValueError, sqlite3.Error) as exc:
        _error(f"demo failed: {exc}")
        return EXIT_FAILURE
    except KeyboardInterrupt:  # runs, telemetry and receiver were already shut down
        _error("demo interrupted")
        return 130
    try:
        if args.json:
            print(json.dumps(report.to_dict(), indent=2), flush=True)
        else:
            print(format_report(report), flush=True)
    except BrokenPipeError:  # `| head`: the reader has enough; keep exit quiet
        _silence_stdout()
    if report.missing:
        _error(f"the receiver did not store {len(report.missing)} of {len(report.runs)} "
               f"runs in full: {', '.join(report.missing)}")
    export = report.export_summary()
    if report.spans_lost:
        _error(f"{report.spans_lost} spans lost exporting to {report.endpoint} "
               f"({export['failed']} failed, {export['dropped']} dropped by the full queue, "
               f"{export['unsent']} not sent within the {flush_timeout:g}s flush timeout)")
    if report.spans_unconfirmed:
        print(f"otel-agentbus: note: {report.spans_unconfirmed} spans were sent to "
              f"{report.endpoint} but not acknowledged (within {flush_timeout:g}s, or the "
              "exporter's own timeout); not counted as lost (--flush-timeout and "
              "OTEL_EXPORTER_OTLP_TIMEOUT wait longer)", file=sys.stderr, flush=True)
    code = 0 if report.ok else EXIT_FAILURE
    if args.serve is not None and report.db is not None:
        return _serve_demo(report, args.serve) or code
    return code


def _serve_demo(report: Any, address: str) -> int:
    """Serve the demo's database in the web view until SIGINT/SIGTERM; 0, or the exit
    code of a failure to start."""
    from .demo.runner import showcase_run
    from .receiver.server import split_host_port
    from .receiver.web.server import WebServer
    from .receiver.web_url import run_link

    try:
        server = WebServer(report.db, split_host_port(address))
    except OSError as exc:
        _error(f"cannot serve the web view on {address}: {exc}")
        return EXIT_FAILURE
    run = showcase_run(report)
    page = run_link(server.url, run.run_id) if run is not None else server.url + "/runs"
    _serve_web_until_signal(server, lambda: print(
        f"\nWeb view: {server.url}/runs  (this run: {page}); Ctrl-C to stop", flush=True))
    return 0


# ---- entry point ----------------------------------------------------------------

_PARSER_ADDERS: list[Callable[[_Subparsers], None]] = [
    _add_receiver_parser,
    _add_runs_parser,
    _add_trace_parser,
    _add_web_parser,
    _add_demo_parser,
]


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows the default of every option that has one; not of flags, nor of ``None``."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    """Every (sub)command's parser, with defaults in its ``--help``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = _Parser(
        prog="otel-agentbus", description="OpenTelemetry-native event bus for AI agents."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, parser_class=_Parser
    )
    for add in _PARSER_ADDERS:
        add(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point; returns the process exit code."""
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        code = handler(args)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit flush
    except BrokenPipeError:
        _silence_stdout()
        return 0
    return code


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        os.close(devnull)


if __name__ == "__main__":
    raise SystemExit(main())
