"""The `stock-assets` command: database, demo, Dagster UI, validation."""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import signal
import socket
import subprocess
import sys
import traceback
import warnings
from pathlib import Path

from stock_assets import settings
from stock_assets.tooling.bench import BENCHMARKS, SUMMARIES
from stock_assets.tooling.bench import benchmark_module as load_benchmark
from stock_assets.tooling.signals import Terminated, terminate_on_sigterm

# Exit statuses: 1 the command failed (one line on stderr says why), 2 bad input (refused before
# anything started), 128 + signal when interrupted (130 Ctrl-C, 143 SIGTERM).
EXIT_FAILED, EXIT_USAGE = 1, 2


class UsageError(ValueError):
    """Input refused before any work started; the message is the one line the user sees."""


def main(argv: list[str] | None = None) -> int:
    # The project uses Dagster's beta backfill policies on purpose; say so once, not per asset.
    warnings.filterwarnings("ignore", message=r".*(beta|preview).*", module=r"dagster(\.|$)")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(argv).parse_args(argv)
    # Everything this process and its children (Dagster's webserver, daemon, run workers) create
    # is private: the state folder, landing Parquet, compute logs, yfinance's cookie file.
    os.umask(0o077)
    if not args.debug:  # libraries' retry chatter (each a multi-line warning) only with --debug
        import logging

        logging.basicConfig(level=logging.ERROR)
    handler = {"db": _db, "demo": _demo, "dev": _dev, "validate": _validate, "bench": _bench,
               "health": _health}[args.command]
    out = sys.stderr  # where this command's own messages go
    # Dagster writes storage trouble straight to stderr, many lines per event; in-process commands
    # keep it in a file and say one line (all of it on the terminal with --debug).
    diverted = io.StringIO() if args.command in DIVERTED_COMMANDS and not args.debug else None
    if diverted is not None:
        sys.stderr = diverted
    try:
        with terminate_on_sigterm():
            return handler(args)
    except UsageError as err:
        print(f"stock-assets {args.command}: {err}", file=out)
        return EXIT_USAGE
    except BrokenPipeError:  # the reader went away (`| head`): nothing left to say to it
        out.close()
        return EXIT_FAILED
    except KeyboardInterrupt:
        print(f"stock-assets {args.command}: interrupted", file=out)
        return 128 + signal.SIGINT
    except Terminated:
        print(f"stock-assets {args.command}: terminated", file=out)
        return 128 + signal.SIGTERM
    except Exception as err:  # noqa: BLE001 - the one place every failure becomes one line
        if args.debug:
            traceback.print_exc(file=out)
        print(f"stock-assets {args.command}: {error_line(err)}", file=out)
        if not args.debug:
            kept = _keep_diverted(args.command, diverted)
            print(f"(run again with --debug for the traceback{f'; other messages: {kept}' if kept else ''})",
                  file=out)
        return EXIT_FAILED
    finally:
        if diverted is not None:
            sys.stderr = out
            _keep_diverted(args.command, diverted)


# Commands that run Dagster in this process (see `main`).
DIVERTED_COMMANDS = {"demo"}


def _keep_diverted(command: str, diverted: io.StringIO | None) -> str | None:
    """Write what was diverted from stderr to `<state>/logs/<command>-stderr.log` (once); its path."""
    if diverted is None or not diverted.getvalue():
        return None
    path = settings.state_dir() / "logs" / f"{command}-stderr.log"
    path.parent.mkdir(mode=0o700, exist_ok=True)
    path.write_text(diverted.getvalue())
    diverted.seek(0)
    diverted.truncate()
    return str(path)


def error_line(err: BaseException) -> str:
    """The cause a user can act on, in one line: the user code's exception under Dagster's
    wrappers, a Failure's description, the innermost database error."""
    import dagster as dg

    seen: set[int] = set()
    while id(err) not in seen:
        seen.add(id(err))
        user = getattr(err, "user_exception", None)
        if isinstance(user, BaseException):
            err = user
            continue
        if isinstance(err, dg.Failure) and err.description:
            return err.description.strip().splitlines()[0][:500]
        cause = err.__cause__ or err.__context__
        wrapper = type(err).__module__.startswith(("dagster", "sqlalchemy"))
        if cause is not None and wrapper:
            err = cause
            continue
        break
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    message = lines[0][:500] if lines else "(no message)"
    if type(err).__module__.startswith("stock_assets"):  # our own messages say what happened
        return message
    return f"{type(err).__name__}: {message}"


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The argument parser. Benchmark modules are imported only when `argv` runs one (they load
    the whole graph), so `--help` answers at once."""
    parser = argparse.ArgumentParser(prog="stock-assets", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="print full tracebacks on failure")
    commands = _Commands(parser.add_subparsers(dest="command", required=True))

    db = commands.add_parser("db", help="the pipeline database").add_subparsers(dest="db_command", required=True)
    url = db.add_parser("url", help="print the database URL in use (starting the embedded server if needed)")
    url.add_argument("--dagster", action="store_true", help="print Dagster's instance storage URL instead")
    url.add_argument("--show-password", action="store_true", help="do not mask the password")
    db.add_parser("start", help="start the embedded server (no-op when a URL is configured)")
    db.add_parser("stop", help="stop the embedded server")
    db.add_parser("status", help="say whether the embedded server is running")

    demo = commands.add_parser("demo", help="materialize the whole graph for a range of the bundled data")
    demo.add_argument("--start", type=dt.date.fromisoformat, default=None, help="first day (default 2020-01-01)")
    demo.add_argument("--end", type=dt.date.fromisoformat, default=None, help="last day (default 2020-06-30)")

    dev = commands.add_parser("dev", help="open the Dagster UI (webserver + daemon)")
    dev.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    dev.add_argument("--port", default="3000")

    commands.add_parser("validate", help="load the definitions and validate them")

    health = commands.add_parser(
        "health", help="check database, quote source, rate limiter, breaker, freshness, dead runs and daemon; "
                       "exit 1 when unhealthy")
    health.add_argument("--json", action="store_true", help="print one JSON object (for machines)")
    health.add_argument("--max-stale-sessions", type=int, default=1, metavar="N",
                        help="fail when the last good daily partition is more than N NYSE sessions behind "
                             "(default 1; with the replay source it is a warning)")

    bench = commands.add_parser("bench", help="run a benchmark and print one JSON object")
    benchmarks = bench.add_subparsers(dest="benchmark", required=True)
    requested = _benchmark_requested(argv or [])
    for name in BENCHMARKS:
        if name == requested:
            module = load_benchmark(name)
            module.configure(benchmarks.add_parser(name, help=SUMMARIES[name], description=module.__doc__,
                                                   formatter_class=argparse.RawDescriptionHelpFormatter))
        else:
            benchmarks.add_parser(name, help=SUMMARIES[name], add_help=False)
    return parser


class _Commands:
    """Sub-commands that also accept `--debug` after their name (`stock-assets demo --debug`)."""

    def __init__(self, subparsers) -> None:
        self._subparsers = subparsers

    def add_parser(self, name: str, **kwargs) -> argparse.ArgumentParser:
        command = self._subparsers.add_parser(name, **kwargs)
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                             help="print full tracebacks on failure")
        return command


def _benchmark_requested(argv: list[str]) -> str | None:
    words = [word for word in argv if not word.startswith("-")]
    if len(words) >= 2 and words[0] == "bench" and words[1] in BENCHMARKS:
        return words[1]
    return None


def _bench(args: argparse.Namespace) -> int:
    result = load_benchmark(args.benchmark).run(args)
    print(json.dumps(result, indent=None if getattr(args, "json", False) else 2, default=str))
    return 0


def _db(args: argparse.Namespace) -> int:
    from stock_assets.database.embedded import EmbeddedServer
    from stock_assets.database.urls import redact
    from stock_assets.instance.environment import prepare_environment

    server = EmbeddedServer(settings.state_dir())
    if args.db_command == "url":
        values = prepare_environment(apply_pools=False)  # only names the URL: never touches Dagster
        value = values[settings.DAGSTER_PG_URL_ENV if args.dagster else settings.DATABASE_URL_ENV]
        print(value if args.show_password else redact(value))
    elif args.db_command == "start":
        prepare_environment(apply_pools=False)
        print("embedded server running" if server.is_running() else "using the configured database")
    elif args.db_command == "stop":
        print("stopped" if server.stop() else "not running")
    elif args.db_command == "status":
        running = server.is_running()
        print(f"embedded server: {'running' if running else 'stopped'} ({server.pgdata})")
        return 0 if running else 3
    return 0


def _demo(args: argparse.Namespace) -> int:
    from stock_assets.instance.environment import prepare_environment
    from stock_assets.tooling.demo import DemoRangeError, resolve_range, run_demo

    try:  # refused before the database starts
        start, end = resolve_range(args.start, args.end)
    except DemoRangeError as err:
        raise UsageError(str(err)) from None
    prepare_environment()
    print(f"quote source: {settings.quote_source()}; database: {_db_label()}", flush=True)
    run_demo(start, end, debug=args.debug)
    return 0


def dg_command(*args: str) -> list[str]:
    """Dagster's `dg` CLI of this environment, for the project in PROJECT_DIR (`[tool.dg]` in
    pyproject.toml), on this interpreter rather than whatever `.venv` dg would look for."""
    return [str(Path(sys.executable).parent / "dg"), *args, "--use-active-venv"]


def dev_command(host: str, port: str) -> list[str]:
    """`dg dev` for this project, bound to `host` (127.0.0.1 unless the operator says otherwise)."""
    return dg_command("dev", "--host", host, "--port", str(port))


def _dev(args: argparse.Namespace) -> int:
    from stock_assets.instance.environment import prepare_environment

    ensure_port_free(args.host, args.port)  # before the database and the daemon start
    prepare_environment()
    _reap_dead_runs()
    command = dev_command(args.host, args.port)
    print(f"Dagster UI on http://{args.host}:{args.port} (database: {_db_label()})", flush=True)
    return run_foreground(command)


def run_foreground(command: list[str], grace_s: float = 30.0) -> int:
    """Run `command` until it ends; on Ctrl-C or SIGTERM pass the signal on and let it shut down
    (`dg dev` stops its webserver and daemon), killing it only after `grace_s`."""
    import psutil

    process = subprocess.Popen(command, cwd=settings.PROJECT_DIR)
    try:
        return process.wait()
    except (KeyboardInterrupt, Terminated) as stop:
        # A terminal's Ctrl-C reached the whole process group already. A SIGTERM to this process
        # alone is passed on as SIGINT to every descendant: `dg dev` told alone to stop leaves
        # its webserver, daemon and code server running.
        family = _descendants(psutil, process.pid)
        if isinstance(stop, Terminated):
            _signal_all(family, signal.SIGINT)
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            _signal_all(family, signal.SIGKILL)
            process.wait()
        raise


def _descendants(psutil, pid: int) -> list:
    try:
        parent = psutil.Process(pid)
        return [parent, *parent.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _signal_all(processes: list, signum: int) -> None:
    for proc in processes:
        try:
            proc.send_signal(signum)
        except Exception:  # noqa: BLE001 - it ended meanwhile
            pass


def ensure_port_free(host: str, port: str) -> None:
    """Refuse to start a second UI (and its daemon) on a port that is already taken."""
    try:
        number = int(port)
    except ValueError:
        raise UsageError(f"--port {port!r} is not a number") from None
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, number))
        except OSError as err:
            raise UsageError(
                f"{host}:{number} is already in use ({err.strerror}); is another `stock-assets dev` running? "
                f"Stop it, or choose another --port") from None


def _reap_dead_runs() -> None:
    import dagster as dg

    from stock_assets.instance.dead_runs import reap_dead_runs

    with dg.DagsterInstance.get() as instance:
        for dead in reap_dead_runs(instance):
            print(f"note: {dead.describe()}; marked it failed and freed its pool slots", flush=True)


def _validate(args: argparse.Namespace) -> int:
    from stock_assets.instance.environment import prepare_environment

    prepare_environment()
    return subprocess.call(dg_command("check", "defs"), cwd=settings.PROJECT_DIR)


def _health(args: argparse.Namespace) -> int:
    from stock_assets.health import run_health

    report = run_health(max_stale_sessions=args.max_stale_sessions)
    print(report.to_json() if args.json else report.render())
    return 0 if report.healthy else 1


def _db_label() -> str:
    from stock_assets.database.urls import redact

    configured = settings.configured_database_url()
    return redact(configured) if configured else "embedded"


if __name__ == "__main__":
    sys.exit(main())
