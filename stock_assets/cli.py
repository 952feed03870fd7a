"""The `stock-assets` command: database, demo, Dagster UI, validation."""

from __future__ import annotations

import argparse
import json
import datetime as dt
import os
import subprocess
import sys
import warnings

from stock_assets import settings
from stock_assets.bench import BENCHMARKS
from stock_assets.bench import benchmark_module as load_benchmark


def main(argv: list[str] | None = None) -> int:
    # The project uses Dagster's beta backfill policies on purpose; say so once, not per asset.
    warnings.filterwarnings("ignore", message=r".*(beta|preview).*", module=r"dagster(\.|$)")
    args = build_parser().parse_args(argv)
    handler = {"db": _db, "demo": _demo, "dev": _dev, "validate": _validate, "bench": _bench,
               "health": _health}[args.command]
    return handler(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stock-assets", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

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
        "health", help="check database, quote source, rate limiter, breaker, freshness and daemon; "
                       "exit 1 when unhealthy")
    health.add_argument("--json", action="store_true", help="print one JSON object (for machines)")
    health.add_argument("--max-stale-sessions", type=int, default=1, metavar="N",
                        help="fail when the last good daily partition is more than N NYSE sessions behind "
                             "(default 1; with the replay source it is a warning)")

    bench = commands.add_parser("bench", help="run a benchmark and print one JSON object")
    benchmarks = bench.add_subparsers(dest="benchmark", required=True)
    for name in BENCHMARKS:
        load_benchmark(name).configure(benchmarks.add_parser(name, help=load_benchmark(name).__doc__))
    return parser


def _bench(args: argparse.Namespace) -> int:
    result = load_benchmark(args.benchmark).run(args)
    print(json.dumps(result, indent=None if getattr(args, "json", False) else 2, default=str))
    return 0


def _db(args: argparse.Namespace) -> int:
    from stock_assets.database.embedded import EmbeddedServer
    from stock_assets.database.urls import redact
    from stock_assets.environment import prepare_environment

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
    from stock_assets.demo import DEFAULT_END, DEFAULT_START, run_demo
    from stock_assets.environment import prepare_environment

    from stock_assets.demo import DemoRangeError

    prepare_environment()
    print(f"quote source: {settings.quote_source()}; database: {_db_label()}")
    try:
        run_demo(args.start or DEFAULT_START, args.end or DEFAULT_END)
    except DemoRangeError as err:
        print(f"stock-assets demo: {err}", file=sys.stderr)
        return 2
    return 0


def dev_command(host: str, port: str) -> list[str]:
    """`dagster dev` for this project, bound to `host` (127.0.0.1 unless the operator says otherwise)."""
    return [sys.executable, "-m", "dagster", "dev", "-w", str(settings.PROJECT_DIR / "workspace.yaml"),
            "--host", host, "--port", str(port)]


def _dev(args: argparse.Namespace) -> int:
    from stock_assets.environment import prepare_environment

    prepare_environment()
    command = dev_command(args.host, args.port)
    print(f"Dagster UI on http://{args.host}:{args.port} (database: {_db_label()})", flush=True)
    return subprocess.call(command, cwd=settings.PROJECT_DIR)


def _validate(args: argparse.Namespace) -> int:
    from stock_assets.environment import prepare_environment

    prepare_environment()
    command = [sys.executable, "-m", "dagster", "definitions", "validate", "-w",
               str(settings.PROJECT_DIR / "workspace.yaml")]
    return subprocess.call(command, cwd=settings.PROJECT_DIR)


def _health(args: argparse.Namespace) -> int:
    from stock_assets.health import run_health

    report = run_health(max_stale_sessions=args.max_stale_sessions)
    print(report.to_json() if args.json else report.render())
    return 0 if report.healthy else 1


def _db_label() -> str:
    from stock_assets.database.urls import redact

    configured = os.environ.get(settings.DATABASE_URL_ENV, "")
    return redact(configured) if configured else "embedded"


if __name__ == "__main__":
    sys.exit(main())
