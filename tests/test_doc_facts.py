"""What the docs state as fact holds in the code: options and their
defaults, configuration examples, environment variables, metric names,
endpoints, operation ids and error responses.

Each check reads names out of README.rst and doc/*.rst and compares them
with what deepserve really has (its option registry, its parsers, a real
server's /swagger.json and /metrics), both ways where the docs claim to be
complete.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deepserve import cli_models, config
from deepserve.shell.command import call_parser
from tests.conftest import VENV_MODELS, subprocess_env
from tests.servers import DEEPSERVE, Server

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "doc"
#: Every page. deploying.rst is left out of the inline option check only:
#: it names docker's options (``--stop-timeout``) bare.
PAGES = [ROOT / "README.rst", *sorted(DOC.glob("*.rst"))]
LITERAL = re.compile(r"``([^`]+)``")


def text(name: str) -> str:
    return (DOC / name).read_text()


# -- options ------------------------------------------------------------------


def default_options() -> dict[str, Any]:
    """``[DEFAULT]``'s options by their config-file name."""
    return {
        opt.dest: opt
        for opt in [*config.server_opts, *config.security_opts, *config.executor_opts]
    }


def job_options() -> dict[str, Any]:
    return {opt.dest: opt for opt in config.job_opts}


def list_tables(page: str) -> list[list[list[str]]]:
    """The rows of each ``list-table`` of ``page``, each row a list of its
    cells' text (lines joined by spaces)."""
    tables = []
    lines = text(page).splitlines()
    for i, line in enumerate(lines):
        if not line.startswith(".. list-table::"):
            continue
        rows: list[list[str]] = []
        for body in lines[i + 1 :]:
            if body and not body.startswith(" "):
                break
            stripped = body.strip()
            if stripped.startswith("* - "):
                rows.append([stripped[4:]])
            elif stripped.startswith("- ") and rows:
                rows[-1].append(stripped[2:])
            elif stripped and rows and not stripped.startswith(":"):
                rows[-1][-1] += " " + stripped
        tables.append(rows)
    return tables


def option_rows(page: str) -> dict[str, str]:
    """Option name -> Default cell, from the ``Option | Default | Meaning``
    tables of ``page``."""
    found = {}
    for rows in list_tables(page):
        if rows and rows[0] == ["Option", "Default", "Meaning"]:
            for row in rows[1:]:
                name = LITERAL.match(row[0])
                assert name, f"{page}: an option row without a ``name``: {row}"
                found[name.group(1)] = row[1]
    return found


def test_the_option_tables_are_found():
    assert len(option_rows("configuration.rst")) >= 30
    assert len(option_rows("jobs.rst")) >= 6


def test_configuration_rst_lists_every_default_option():
    documented = set(option_rows("configuration.rst"))
    real = set(default_options())
    assert not real - documented, (
        f"options missing from configuration.rst: {real - documented}"
    )
    assert not documented - real, (
        f"configuration.rst lists no such option: {documented - real}"
    )


def ray_options() -> dict[str, Any]:
    return {opt.dest: opt for opt in config.ray_opts}


def test_scaling_out_rst_lists_every_ray_option():
    documented, real = set(option_rows("scaling-out.rst")), set(ray_options())
    assert documented == real, f"scaling-out.rst lists {documented}, [ray] has {real}"


def test_jobs_rst_lists_every_jobs_option():
    documented, real = set(option_rows("jobs.rst")), set(job_options())
    assert documented == real, f"jobs.rst lists {documented}, [jobs] has {real}"


def shown_default(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


@pytest.mark.parametrize(
    ("page", "options"),
    [
        ("configuration.rst", default_options()),
        ("jobs.rst", job_options()),
        ("scaling-out.rst", ray_options()),
    ],
    ids=["configuration", "jobs", "ray"],
)
def test_documented_defaults_are_the_defaults(page, options):
    checked = 0
    for name, cell in option_rows(page).items():
        default = options[name].default
        if default in (None, "", []):
            continue  # computed or none: the cell says so in words
        literal = LITERAL.match(cell)
        assert literal, (
            f"{page}: {name}'s default should be ``{shown_default(default)}``"
        )
        assert literal.group(1) == shown_default(default), (
            f"{page}: {name}'s default is {shown_default(default)}, not {literal.group(1)}"
        )
        checked += 1
    assert checked >= 4


# -- configuration files --------------------------------------------------------


def ini_blocks() -> list[tuple[str, str]]:
    """``code-block:: ini`` blocks that are deepserve configuration files
    (not, say, a setup.cfg's ``[options.entry_points]``)."""
    found = []
    block = re.compile(r"^\.\. code-block:: ini\n\n((?:(?:   .*)?\n)+)", re.M)
    for path in PAGES:
        for match in block.finditer(path.read_text()):
            body = "\n".join(line[3:] for line in match.group(1).splitlines())
            sections = re.findall(r"^\[([^\]]+)\]", body, re.M)
            if sections and all(
                s in ("DEFAULT", config.JOBS_GROUP)
                or s.startswith(config.MODEL_SECTION)
                for s in sections
            ):
                found.append((path.name, body))
    return found


def test_the_ini_examples_are_found():
    assert len(ini_blocks()) >= 4


@pytest.mark.parametrize(("page", "body"), ini_blocks())
def test_ini_examples_set_real_options(page, body, tmp_path):
    # Unknown keys are silently ignored by oslo.config: check every name,
    # commented-out settings included, then load the file for the values.
    allowed = {
        "DEFAULT": set(default_options()),
        config.JOBS_GROUP: set(job_options()),
        "model": {opt.dest for opt in config.executor_opts},
    }
    section = "DEFAULT"
    for line in body.splitlines():
        header = re.match(r"^\[([^\]]+)\]", line)
        if header:
            section = header.group(1).partition(":")[0]
            continue
        setting = re.match(r"^#?\s*([a-z][a-z_-]*)\s*=\s", line)
        if setting:
            key = setting.group(1)
            assert key in allowed[section], f"{page}: no option '{key}' in [{section}]"
    conf = tmp_path / "deepserve.conf"
    conf.write_text(body + "\n")
    config.load(["--config-file", str(conf)], {}, default_config_files=[])


# -- options named in the text --------------------------------------------------


def run_options() -> set[str]:
    """Every option ``deepserve run`` takes, as its --help lists them, each
    ``--[no]NAME`` as both forms."""
    env = {**subprocess_env(), "COLUMNS": "80", "NO_COLOR": "1"}
    out = subprocess.run(
        [*DEEPSERVE, "run", "--help"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    found = set()
    for line in out.splitlines():
        if not line.lstrip().startswith("-"):
            continue
        head = re.split(r"\s{2,}", line.strip())[0]
        for dashes, no, name in re.findall(
            r"(?<![\w-])(--?)(\[no\])?([a-z][\w-]*)", head
        ):
            found.add(dashes + name)
            if no:
                found.add(f"--no{name}")
    return found


def call_options() -> set[str]:
    """``deepserve call``'s options, before a method (hidden ones included)
    and after ``predict`` (the demo model's arguments left out)."""
    parser = call_parser("deepserve call")
    found = {o for action in parser._actions for o in action.option_strings}
    env = {**subprocess_env(), "COLUMNS": "80", "NO_COLOR": "1"}
    out = subprocess.run(
        [*DEEPSERVE, "call", "--model-name", "demo", "predict", "--help"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    own = out.partition("arguments of predict():")[0]
    found.update(
        re.findall(r"(?<![\w-])(--?[a-z][\w-]*)", own.partition("options:")[2])
    )
    return found


def models_options() -> set[str]:
    parser, actions = cli_models._parser()
    return {
        option
        for p in [parser, *actions.values()]
        for action in p._actions
        for option in action.option_strings
    }


#: Options of a model's own arguments, shown in cli.rst as examples of how
#: ``deepserve call`` turns fields into options: none is deepserve's own.
MODEL_ARGUMENT_EXAMPLES = {
    "--text", "--document", "--top_k", "--corpus", "--data", "--count",
    "--when", "--colour", "--loud", "--no-loud", "--tags", "--options",
    "--x", "--no-x",
}  # fmt: skip


def inline_options() -> list[tuple[str, str, str]]:
    """``(page, literal, option)`` for every option in an inline literal that
    is a deepserve command line or starts with an option."""
    found = []
    for path in PAGES:
        if path.name == "deploying.rst":
            continue
        for literal in LITERAL.findall(path.read_text()):
            words = literal.split()
            if not (
                words[0] in ("deepserve", "deepserve-cli") or words[0].startswith("-")
            ):
                continue
            for word in words:
                option = re.match(r"^--?[a-zA-Z][\w-]*", word)
                if option:
                    found.append((path.name, literal, option.group()))
    return found


@pytest.fixture(scope="module")
def deepserve_options() -> set[str]:
    return run_options() | call_options() | models_options() | {"--version"}


def test_the_option_sources_are_found(deepserve_options):
    assert {"--nowarm", "--jobs-database", "--config-dir", "-d"} <= deepserve_options
    assert {"--accept", "--deepaas_method_output", "--no-warm"} <= deepserve_options
    assert {"--store", "--force", "--no-progress", "-y"} <= deepserve_options
    assert len(inline_options()) >= 60


def test_the_model_argument_examples_are_not_deepserve_options(deepserve_options):
    assert not MODEL_ARGUMENT_EXAMPLES & deepserve_options


def test_options_named_in_the_text_exist(deepserve_options):
    known = deepserve_options | MODEL_ARGUMENT_EXAMPLES
    wrong = []
    for page, literal, option in inline_options():
        if option.endswith("-"):  # a family: ``--jobs-<name>``, ``--jobs-*``
            ok = any(k.startswith(option) for k in known)
        else:
            ok = option in known
        if not ok:
            wrong.append(f"{page}: ``{literal}``")
    assert not wrong, "no such option: " + "; ".join(wrong)


def models_command_lines() -> list[tuple[str, list[str]]]:
    """``$ deepserve models ...`` lines, except those shown failing (the next
    line is their ``error:``)."""
    found = []
    command = re.compile(r"^\s*\$ deepserve models (.*)$", re.M)
    for path in PAGES:
        page = path.read_text()
        for match in command.finditer(page):
            following = page[match.end() + 1 :].split("\n", 1)[0]
            if ": error: " not in following:
                found.append((path.name, shlex.split(match.group(1), comments=True)))
    return found


def test_the_models_command_lines_are_found():
    assert len(models_command_lines()) >= 8


@pytest.mark.parametrize(("page", "argv"), models_command_lines())
def test_models_command_lines_parse(page, argv):
    parser, _actions = cli_models._parser()
    try:
        args, extra = parser.parse_known_args(argv)
    except cli_models.CommandLineError as exc:
        pytest.fail(f"{page}: 'deepserve models {shlex.join(argv)}': {exc}")
    assert args.action is not None and not extra, f"{page}: {argv}"


# -- environment variables ------------------------------------------------------


def named_variables() -> set[tuple[str, str]]:
    found = set()
    for path in PAGES:
        for literal in LITERAL.findall(path.read_text()):
            for name in re.findall(r"\b((?:DEEPSERVE|DEEPAAS)_[A-Z0-9_]+)", literal):
                found.add((path.name, name))
    return found


def test_environment_variables_named_are_read():
    source = "\n".join(p.read_text() for p in (ROOT / "deepserve").rglob("*.py"))
    names = named_variables()
    assert {n for _, n in names} >= {"DEEPSERVE_HOME", "DEEPSERVE_AUTH_TOKEN"}
    unread = sorted(f"{page}: {name}" for page, name in names if name not in source)
    assert not unread, f"deepserve reads no such variable: {unread}"


# -- a real server: metrics, endpoints, operations --------------------------------


@pytest.fixture(scope="module")
def served() -> Iterator[dict[str, Any]]:
    """What a real demo server answers: its OpenAPI document, its metrics,
    and the server itself (debug endpoint on, as the endpoint table lists
    it)."""
    env = dict(os.environ)
    for var in ("PYTHONPATH", "DEEPSERVE_V2_MODEL", "DEEPAAS_V2_MODEL"):
        env.pop(var, None)
    names = ["--model-name", "demo"] if VENV_MODELS else []
    server = Server([*names, "--debug-endpoint"], env)
    try:
        server.wait_ready("")
        with urllib.request.urlopen(server.base + "/swagger.json", timeout=10) as r:
            spec = json.load(r)
        with urllib.request.urlopen(server.base + "/metrics", timeout=10) as r:
            metrics = r.read().decode()
        yield {"server": server, "spec": spec, "metrics": metrics}
    finally:
        server.stop()


def metric_rows() -> dict[str, tuple[str, set[str]]]:
    """Metric name -> (type, labels), from metrics.rst's table."""
    found = {}
    for rows in list_tables("metrics.rst"):
        if rows and rows[0][:2] == ["Name", "Type"]:
            for name, kind, labels, _meaning in rows[1:]:
                found[LITERAL.match(name).group(1)] = (
                    kind,
                    set(LITERAL.findall(labels)),
                )
    return found


def test_the_metrics_documented_are_those_exported(served):
    exported = {
        name: kind
        for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", served["metrics"], re.M)
        # prometheus_client's own creation timestamps of each series
        if not name.endswith("_created")
    }
    documented = metric_rows()
    assert len(documented) >= 6
    assert set(documented) == set(exported), (
        f"metrics.rst lists {sorted(documented)}; /metrics has {sorted(exported)}"
    )
    for name, (kind, _labels) in documented.items():
        assert kind == exported[name], f"{name} is a {exported[name]}, not a {kind}"


def test_the_metric_labels_documented_are_those_exported(served):
    checked = 0
    for name, (_kind, labels) in metric_rows().items():
        samples = re.findall(
            rf"^{name}(?:_bucket|_count|_sum)?\{{([^}}]*)\}}", served["metrics"], re.M
        )
        for sample in samples:
            found = set(re.findall(r'(\w+)="', sample)) - {"le"}
            assert found == labels, (
                f"{name} has labels {found}, metrics.rst says {labels}"
            )
            checked += 1
    assert checked  # the request metrics at least: /swagger.json was asked for


def endpoint_rows() -> set[tuple[str, str]]:
    """(method, path) of http-api.rst's endpoint table."""
    table = text("http-api.rst").partition("\nEndpoints\n---------\n")[2]
    table = table.partition("\n.. [#")[0]
    return set(re.findall(r"^``([A-Z]+)``\s+``([^`]+)``", table, re.M))


def test_the_endpoint_table_lists_every_documented_operation(served):
    rows = endpoint_rows()
    assert len(rows) >= 18
    operations = {
        (method.upper(), path.replace("/demo/", "/{name}/"))
        for path, item in served["spec"]["paths"].items()
        for method in item
        if method in ("get", "post", "put", "patch", "delete")
    }
    assert not operations - rows, f"missing from http-api.rst: {operations - rows}"


def test_every_endpoint_in_the_table_answers(served):
    # Those the OpenAPI document leaves out (the document itself, the UI, the
    # debug log) are asked for; the others must be in the document.
    base = served["server"].base
    documented = {
        (method.upper(), path.replace("/demo/", "/{name}/"))
        for path, item in served["spec"]["paths"].items()
        for method in item
    }
    for method, path in endpoint_rows() - documented:
        assert method == "GET" and "{" not in path, f"{method} {path} is not served"
        request = urllib.request.Request(base + path)
        opener = urllib.request.build_opener(NoRedirect)
        try:
            with opener.open(request, timeout=10) as answer:
                status = answer.status
        except urllib.error.HTTPError as exc:
            status = exc.code
        assert status in (200, 302), f"GET {path} answers {status}"


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def test_the_operation_ids_are_those_documented(served):
    documented = set(re.findall(r"``<name>\.(\w+)``", text("http-api.rst")))
    real = {
        op["operationId"].partition(".")[2]
        for item in served["spec"]["paths"].values()
        for op in item.values()
        if isinstance(op, dict) and op.get("operationId", "").startswith("demo.")
    }
    assert documented == real, (
        f"http-api.rst names {documented}; the document has {real}"
    )


def test_the_error_responses_are_those_documented(served):
    page = text("http-api.rst")
    listed = page.partition("Error responses are declared once")[2]
    listed = listed.partition("and each operation")[0]
    documented = set(re.findall(r"``([A-Z]\w+)``", listed))
    real = set(served["spec"]["components"]["responses"])
    # Unauthorized is declared only with authentication on (the test server
    # has none): tests/api cover that document.
    assert documented - {"Unauthorized"} == real
    assert "Unauthorized" in documented
