"""The README cannot drift: every command block it shows is checked, cheaply.

- bash blocks: each line is a `make` target that exists, a `stock-assets` command the CLI accepts,
  an `export` of a variable the project reads, or a `curl` whose body is valid JSON holding a
  GraphQL document that validates against Dagster's own schema. Anything else fails this test, so a
  new kind of command gets a check here.
- python blocks compile, and the jobs they name exist; sql blocks run against the test database.
- every sensor, job, schedule and asset the README names exists in the Definitions, and every one
  in the Definitions is named in the README; links to files and anchors resolve.

The commands themselves are exercised elsewhere (`make demo` by test_pipeline's demo test, the UI
and GraphQL by test_ui_graphql), so `make test` stays fast.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys

import pytest
from sqlalchemy import text

from stock_assets import settings
from stock_assets.defs.operations import alerting
from stock_assets.tooling.cli import build_parser

README = settings.PROJECT_DIR / "README.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
KNOWN_VARIABLES = {
    value for module in (settings, alerting) for name, value in vars(module).items()
    if name.endswith("_ENV") and isinstance(value, str)
}


def _blocks(language: str) -> list[str]:
    return [body for lang, body in FENCE.findall(README.read_text()) if lang == language]


def _lines(block: str) -> list[str]:
    lines = []
    for raw in block.splitlines():
        line = raw.split(" #", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
        if line:
            lines.append(line)
    return lines


def _make_targets() -> set[str]:
    makefile = (settings.PROJECT_DIR / "Makefile").read_text()
    return set(re.findall(r"^([a-z][\w-]*):", makefile, re.M))


@pytest.fixture(scope="module")
def defs():
    from stock_assets.definitions import defs

    return defs


@pytest.fixture(scope="module")
def graphql_schema():
    from dagster_graphql.schema import create_schema

    return create_schema().graphql_schema


def test_every_bash_line_is_a_command_that_works(graphql_schema):
    import graphql

    targets = _make_targets()
    parser_checked = 0
    lines = [line for block in _blocks("bash") for line in _lines(block)]
    assert lines
    for line in lines:
        words = shlex.split(line)
        if words[0] == "make":
            assert set(words[1:]) <= targets, line
        elif words[0] in (".venv/bin/stock-assets", "stock-assets"):
            try:
                build_parser(words[1:]).parse_args(words[1:])
            except SystemExit as exited:
                pytest.fail(f"the CLI refuses the README's `{line}` (exit {exited.code})")
            parser_checked += 1
        elif words[0] == "export":
            name = words[1].split("=", 1)[0]
            assert name in KNOWN_VARIABLES, f"README exports {name}, which the project does not read"
        elif words[0] == "curl":
            body = json.loads(words[words.index("-d") + 1])  # the body a shell would send
            document = graphql.parse(body["query"])
            errors = graphql.validate(graphql_schema, document)
            assert not errors, f"{line}: {errors}"
            assert words[words.index("-H") + 1] == "Content-Type: application/json"
        else:
            pytest.fail(f"no check for the README command `{line}`: add one to this test")
    assert parser_checked >= 1


def test_the_cli_help_answers():
    out = subprocess.run([sys.executable, "-m", "stock_assets.tooling.cli", "--help"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0
    for command in ("db", "demo", "dev", "validate", "bench", "health"):
        assert command in out.stdout


def test_python_blocks_compile_and_name_real_jobs(defs):
    blocks = _blocks("python")
    assert blocks
    for block in blocks:
        compile(block, "README.md", "exec")
        for job in re.findall(r'"(\w+_job)"', block):
            assert defs.resolve_job_def(job) is not None


def test_sql_blocks_run(database):
    blocks = _blocks("sql")
    assert blocks
    with database.begin() as conn:
        for block in blocks:
            conn.execute(text(block))


def test_names_in_the_readme_exist_and_every_definition_is_named(defs):
    readme = README.read_text()
    named = set(re.findall(r"`([a-z][a-z0-9_]*)`", readme))
    sensors = {sensor.name for sensor in defs.sensors}
    schedules = {schedule.name for schedule in defs.schedules}
    jobs = {job.name for job in defs.jobs}
    assets = {key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys()}
    for name in named:
        if name.endswith("_sensor"):
            assert name in sensors, f"README names a sensor `{name}` that does not exist"
        if name.endswith("_schedule"):
            assert name in schedules, f"README names a schedule `{name}` that does not exist"
        if name.endswith("_job"):
            assert name in jobs, f"README names a job `{name}` that does not exist"
    table_assets = set(re.findall(r"^\| `([a-z_]+)` \| (?:none|daily|monthly)", readme, re.M))
    assert table_assets <= assets, table_assets - assets
    missing = (sensors | schedules | jobs | assets) - named
    assert not missing, f"not mentioned in the README: {sorted(missing)}"


def test_links_resolve():
    readme = README.read_text()
    for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", readme):
        assert (settings.PROJECT_DIR / target).exists(), target
    for page, anchor in re.findall(r"\]\(([^)#:]+\.md)#([^)]+)\)", readme):
        headings = re.findall(r"^#+ (.+)$", (settings.PROJECT_DIR / page).read_text(), re.M)
        slugs = {re.sub(r"[^a-z0-9 -]", "", heading.lower()).replace(" ", "-") for heading in headings}
        assert anchor in slugs, f"{page}#{anchor}"
