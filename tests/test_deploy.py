"""The deployment kit in deploy/: its Dockerfile and Kubernetes manifests.

No container runs here. The manifests are validated offline against the
Kubernetes schemas (kubernetes-validate), then checked against what the
server really does: the options they give it are parsed by deepserve's own
configuration code, and a real server is started as the pod would start it,
from the image that deploy/check-dockerfile.py builds by running the
Dockerfile's steps in fresh venvs, with its jobs in a real PostgreSQL.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

import deepserve
from deepserve import config
from deepserve.settings import ServerSettings
from tests.servers import free_port

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
DOCKERFILE = DEPLOY / "Dockerfile"
CHECK = DEPLOY / "check-dockerfile.py"

#: Validated against: the oldest Kubernetes the manifests claim to work
#: on (doc/deploying.rst), and a recent one.
K8S_VERSIONS = ("1.29", "1.35")

#: Seconds a pod needs after --shutdown-grace, beyond the preStop sleep, to
#: stop its workers and close the database before the kubelet's SIGKILL.
CLEANUP_MARGIN = 5

#: The example Secret: outside deploy/kubernetes, so that neither
#: ``kubectl apply -k`` nor ``kubectl apply -f deploy/kubernetes/`` applies it.
EXAMPLE_SECRET = DEPLOY / "examples" / "secret.yaml"

#: Where the pod reads the jobs database's URL: the Secret's ``jobs.conf``.
SECRET_CONFIG = "/etc/deepserve-secret/jobs.conf"


def _check_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("check_dockerfile", CHECK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


check = _check_module()


def kubernetes_validate() -> Any:
    """The validator; a skip where it is not installed, except in CI
    (CI=true), where the test extra must bring it."""
    if os.environ.get("CI") == "true":
        import kubernetes_validate as module

        return module
    return pytest.importorskip(
        "kubernetes_validate", reason="kubernetes-validate is not installed"
    )


# --- reading the manifests ------------------------------------------------------


def applied_files() -> list[Path]:
    """What ``kubectl apply -f deploy/kubernetes/`` would apply."""
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def manifest_files() -> list[Path]:
    return [*applied_files(), EXAMPLE_SECRET]


def load(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def resources() -> dict[str, dict[str, Any]]:
    """Every resource of the kit, by kind (one of each)."""
    found: dict[str, dict[str, Any]] = {}
    for path in manifest_files():
        for doc in load(path):
            assert doc["kind"] not in found, f"two {doc['kind']}s"
            found[doc["kind"]] = doc
    return found


def container(res: dict[str, dict[str, Any]]) -> dict[str, Any]:
    (only,) = res["Deployment"]["spec"]["template"]["spec"]["containers"]
    return only


def k8s_expand(text: str, env: dict[str, str]) -> str:
    """``$(NAME)`` as Kubernetes expands it in args: a defined variable's
    value, ``$$`` a dollar, anything else kept."""

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))

    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)", one, text)


def secret_value(res: dict[str, dict[str, Any]], ref: dict[str, Any]) -> str | None:
    secret = res["Secret"]
    if secret["metadata"]["name"] != ref["name"]:
        return None
    return (secret.get("stringData") or {}).get(ref["key"])


def container_env(
    res: dict[str, dict[str, Any]], overrides: dict[str, str] | None = None
) -> dict[str, str]:
    """The container's variables, Secret values from the example Secret
    (or ``overrides``, by key)."""
    env: dict[str, str] = {}
    for var in container(res).get("env", []):
        if "value" in var:
            env[var["name"]] = k8s_expand(var["value"], env)
            continue
        ref = var["valueFrom"]["secretKeyRef"]
        value = (overrides or {}).get(ref["key"]) or secret_value(res, ref)
        if value is not None:
            env[var["name"]] = value
    return env


class Pod:
    """The container's file system as far as deepserve sees it: each
    volume mount is a directory of ``root`` (a ConfigMap's keys as files, a
    Secret's from the example Secret or ``overrides``, by key)."""

    def __init__(
        self,
        res: dict[str, dict[str, Any]],
        root: Path,
        overrides: dict[str, str] | None = None,
    ) -> None:
        spec = res["Deployment"]["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        self.mounts: dict[str, Path] = {}
        for n, mount in enumerate(container(res).get("volumeMounts", [])):
            host = root / f"volume-{n}-{mount['name']}"
            host.mkdir(parents=True)
            volume = volumes[mount["name"]]
            if "configMap" in volume:
                configmap = res["ConfigMap"]
                assert configmap["metadata"]["name"] == volume["configMap"]["name"]
                for key, text in configmap["data"].items():
                    (host / key).write_text(text)
            if "secret" in volume:
                ref = volume["secret"]
                data = res["Secret"].get("stringData") or {}
                if res["Secret"]["metadata"]["name"] == ref["secretName"]:
                    items = ref.get("items") or [
                        {"key": k, "path": k} for k in sorted(data)
                    ]
                    for item in items:
                        value = (overrides or {}).get(
                            item["key"], data.get(item["key"])
                        )
                        if value is not None:
                            (host / item["path"]).write_text(value)
            self.mounts[mount["mountPath"].rstrip("/")] = host

    def host(self, text: str) -> str:
        """Container paths in ``text`` (at a word's start or after '=')
        moved to the mounts' directories."""
        paths = sorted(self.mounts, key=len, reverse=True)
        if not paths:
            return text
        pattern = "|".join(re.escape(p) for p in paths)
        # One pass: a mount's directory is never mapped again.
        text = re.sub(
            rf"(^|=|:)({pattern})(?=/|$|:)",
            lambda m: m.group(1) + str(self.mounts[m.group(2)]),
            text,
        )
        return text


def effective_argv(
    res: dict[str, dict[str, Any]],
    image: dict[str, Any],
    env: dict[str, str],
    host: Callable[[str], str] = str,
) -> list[str]:
    """The command line the container runs: the image's entry point (less
    its init) and CMD, or the container's command, then its args, with
    ``host`` moving the container paths they name before the variables are
    expanded (a variable's value is no container path)."""
    spec = container(res)
    head = spec.get("command") or check.program(image["entrypoint"], [])
    tail = spec.get("args") if "args" in spec else image["cmd"]
    return [*head, *(k8s_expand(host(a), env) for a in tail)]


def settings_of(
    res: dict[str, dict[str, Any]], image: dict[str, Any], tmp: Path
) -> ServerSettings:
    """What ``deepserve run`` makes of the container's command line, its
    variables and its mounted configuration files."""
    env = container_env(res)
    argv = effective_argv(res, image, env, Pod(res, tmp).host)
    assert argv[:2] == ["deepserve", "run"], argv
    settings, _ = config.load(argv[2:], env, default_config_files=[])
    return settings


# --- what the manifests must agree on ------------------------------------------


def _port_number(value: Any, ports: list[dict[str, Any]]) -> int | None:
    if isinstance(value, int):
        return value
    for port in ports:
        if port.get("name") == value:
            return int(port["containerPort"])
    return None


def option_given(argv: list[str], name: str) -> bool:
    """Whether ``--name`` (``--name=V``, ``--name V``, dashes or
    underscores) is in ``argv``."""
    wanted = "--" + name.replace("_", "-")
    return any(a.replace("_", "-").partition("=")[0] == wanted for a in argv)


def _uid(user: str) -> int | None:
    name = user.split(":")[0]
    return int(name) if name.isdigit() else None


def secret_problems(res: dict[str, dict[str, Any]]) -> list[str]:
    """How the container's use of the Secret goes wrong: keys the example
    Secret has not, files others may read, the URL on the command line."""
    found: list[str] = []
    c = container(res)
    spec = res["Deployment"]["spec"]["template"]["spec"]
    # Secrets the container reads exist in the example Secret.
    for var in c.get("env", []):
        ref = (var.get("valueFrom") or {}).get("secretKeyRef")
        if ref and secret_value(res, ref) is None:
            found.append(
                f"{var['name']} reads key {ref['key']} of Secret {ref['name']}, "
                "which the example Secret has not"
            )
    secret_mounts = {m["name"]: m for m in c.get("volumeMounts", [])}
    for volume in spec.get("volumes", []):
        ref = volume.get("secret")
        if ref is None:
            continue
        for item in ref.get("items", []):
            key = item["key"]
            if secret_value(res, {"name": ref["secretName"], "key": key}) is None:
                found.append(
                    f"volume {volume['name']} reads key {key} of Secret "
                    f"{ref['secretName']}, which the example Secret has not"
                )
        mode = ref.get("defaultMode", 0o644)
        if mode & 0o007:
            found.append(
                f"volume {volume['name']}: the Secret's files are readable by "
                f"every user (defaultMode {mode:04o})"
            )
        mount = secret_mounts.get(volume["name"])
        if mount is not None and not mount.get("readOnly"):
            found.append(f"volume {volume['name']} is not mounted readOnly")
    if option_given(c.get("args", []), "jobs-database"):
        found.append(
            "the jobs database is on the command line (--jobs-database): its "
            "password would show in /proc/PID/cmdline; read it from the "
            "Secret's jobs.conf (--config-file)"
        )
    return found


def problems(
    res: dict[str, dict[str, Any]], image: dict[str, Any], tmp: Path
) -> list[str]:
    """Every way the manifests and the image disagree with each other or
    with the server; empty when they agree."""
    found: list[str] = []
    c = container(res)
    deployment = res["Deployment"]
    pod = deployment["spec"]["template"]
    spec = pod["spec"]
    found.extend(secret_problems(res))
    try:
        settings = settings_of(res, image, tmp)
    except Exception as exc:  # a wrong option, a missing file...
        return [*found, f"deepserve run refuses the container's options: {exc}"]
    base = settings.api.base_path
    port = settings.listen_port

    # Listening where the Service and the probes look.
    if settings.listen_ip not in ("0.0.0.0", "::"):
        found.append(
            f"the server listens on {settings.listen_ip}: unreachable from outside "
            "the container"
        )
    ports = c.get("ports", [])
    if [int(p["containerPort"]) for p in ports] != [port]:
        found.append(f"containerPort is not the listen port {port}")
    expected = {
        "startupProbe": "/v2/health/ready",
        "readinessProbe": "/v2/health/ready",
        "livenessProbe": "/v2/health/live",
    }
    for probe, path in expected.items():
        get = (c.get(probe) or {}).get("httpGet")
        if get is None:
            found.append(f"no {probe} (httpGet)")
            continue
        if get.get("path") != base + path:
            found.append(f"{probe} asks {get.get('path')}, not {base + path}")
        if _port_number(get.get("port"), ports) != port:
            found.append(f"{probe} asks port {get.get('port')}, not {port}")
    service = res["Service"]
    labels = pod["metadata"]["labels"]
    for kind, selector in (
        ("Service", service["spec"]["selector"]),
        ("Deployment", deployment["spec"]["selector"]["matchLabels"]),
        ("PodDisruptionBudget", res["PodDisruptionBudget"]["spec"]["selector"]),
    ):
        selector = selector.get("matchLabels", selector)
        if not selector or any(labels.get(k) != v for k, v in selector.items()):
            found.append(f"the {kind}'s selector does not select the pods")
    for service_port in service["spec"]["ports"]:
        if _port_number(service_port["targetPort"], ports) != port:
            found.append(
                f"the Service's targetPort {service_port['targetPort']} is not "
                f"the listen port {port}"
            )

    # Prometheus finds the metrics, and may read them.
    notes = pod["metadata"].get("annotations", {})
    if notes.get("prometheus.io/scrape") != "true":
        found.append("prometheus.io/scrape is not 'true'")
    if notes.get("prometheus.io/path") != base + "/metrics":
        found.append(f"prometheus.io/path is not {base}/metrics")
    if notes.get("prometheus.io/port") != str(port):
        found.append(f"prometheus.io/port is not {port}")
    if not settings.api.metrics_endpoint:
        found.append("the metrics endpoint is off")
    if settings.api.auth_tokens and settings.api.auth_metrics:
        found.append(
            "with a token, /metrics needs it: Prometheus' pod annotations send none"
        )

    database = settings.jobs.database
    if not database.startswith("postgresql+psycopg://"):
        found.append(
            f"the jobs database is {database.split(':')[0]}, not "
            "PostgreSQL through psycopg (the driver the image installs)"
        )

    # Not root, nothing to write but the volumes.
    uid = _uid(image["user"])
    if uid is None or uid == 0:
        found.append(f"the image's USER {image['user']} is not a numeric non-root id")
    security = spec.get("securityContext", {})
    if security.get("runAsNonRoot") is not True:
        found.append("runAsNonRoot is not true")
    if security.get("runAsUser") != uid:
        found.append(f"runAsUser is not the image's user {uid}")
    if security.get("seccompProfile", {}).get("type") not in (
        "RuntimeDefault",
        "Localhost",
    ):
        found.append("no seccomp profile")
    own = c.get("securityContext", {})
    if own.get("allowPrivilegeEscalation") is not False:
        found.append("allowPrivilegeEscalation is not false")
    if own.get("capabilities", {}).get("drop") != ["ALL"]:
        found.append("the capabilities are not all dropped")
    if own.get("readOnlyRootFilesystem") is not True:
        found.append("the root file system is writable")
    mounted = {
        m["mountPath"] for m in c.get("volumeMounts", []) if not m.get("readOnly")
    }
    for needed in ("/tmp", image["env"].get("HOME", "/")):
        if needed not in mounted:
            found.append(f"nothing writable is mounted at {needed}")

    # Stopping: the kubelet waits longer than deepserve's own grace.
    grace = spec.get("terminationGracePeriodSeconds", 30)
    pre_stop = (c.get("lifecycle") or {}).get("preStop")
    sleep = 0.0
    if pre_stop is not None:
        command = pre_stop.get("exec", {}).get("command", [])
        if len(command) == 2 and command[0] == "sleep":
            sleep = float(command[1])
        else:
            found.append(f"the preStop hook is not a sleep: {pre_stop}")
    if grace < sleep + settings.shutdown_grace + CLEANUP_MARGIN:
        found.append(
            f"terminationGracePeriodSeconds ({grace}) leaves less than "
            f"{CLEANUP_MARGIN} s after the preStop sleep ({sleep:g}) and "
            f"--shutdown-grace ({settings.shutdown_grace:g})"
        )
    timeout = settings.executor.predict_timeout
    if timeout is not None and timeout >= settings.shutdown_grace:
        found.append(
            f"predict_timeout ({timeout:g}) is not below --shutdown-grace "
            f"({settings.shutdown_grace:g}): a shutdown may cut predictions off"
        )

    # The image agrees: the port it exposes and its own health check.
    if str(port) not in [e.split("/")[0] for e in image["expose"]]:
        found.append(f"the image does not EXPOSE {port}")
    health = " ".join(image["healthcheck"] or [])
    if f"127.0.0.1:{port}{base}/v2/health/ready" not in health:
        found.append(f"the image's HEALTHCHECK does not ask :{port}/v2/health/ready")

    # kubectl apply -k: the image is the one kustomization.yaml sets.
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    names = [i["name"] for i in kustomization.get("images", [])]
    if c["image"].rsplit(":", 1)[0] not in names:
        found.append(f"kustomization.yaml's images do not name {c['image']}")
    return found


# --- validation against the Kubernetes schemas ---------------------------------


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_manifest_validates_against_the_kubernetes_schemas(version):
    validator = kubernetes_validate()
    kinds = []
    for path in manifest_files():
        for doc in load(path):
            # strict: a field the schema does not know is an error too.
            validator.validate(doc, version, strict=True)
            kinds.append(doc["kind"])
    assert sorted(kinds) == [
        "ConfigMap",
        "Deployment",
        "PodDisruptionBudget",
        "Secret",
        "Service",
    ]


@pytest.mark.parametrize(
    "spoil",
    [
        # A misspelt field, which kubectl would drop (or refuse) too.
        lambda c: c.update(livenesProbe=c.pop("livenessProbe")),
        # A port as a string.
        lambda c: c["ports"][0].update(containerPort="5000"),
    ],
    ids=["misspelt-field", "wrong-type"],
)
def test_the_validation_catches_a_broken_deployment(spoil):
    validator = kubernetes_validate()
    (deployment,) = load(K8S / "deployment.yaml")
    spoil(deployment["spec"]["template"]["spec"]["containers"][0])
    with pytest.raises(validator.ValidationError):
        validator.validate(deployment, K8S_VERSIONS[0], strict=True)


def test_kustomization_applies_every_manifest_of_its_directory():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    applied = sorted(kustomization["resources"])
    assert applied == sorted(p.name for p in applied_files())
    assert all((K8S / name).is_file() for name in applied)


def test_applying_the_directory_puts_no_secret_over_the_real_one():
    """``kubectl apply -f deploy/kubernetes/`` applies every file there:
    the example Secret's CHANGE-ME values must not be one of them."""
    kinds = [doc["kind"] for path in applied_files() for doc in load(path)]
    assert "Secret" not in kinds
    assert [d["kind"] for d in load(EXAMPLE_SECRET)] == ["Secret"]


# --- the manifests agree with the image and the server --------------------------


@pytest.fixture(scope="module")
def image() -> dict[str, Any]:
    """What the Dockerfile's last stage sets, read without building."""
    return check.describe(DOCKERFILE)


def test_the_image_runs_deepserve_as_a_numeric_non_root_user(image):
    assert image["user"] == "10001:10001"
    argv = check.program(image["entrypoint"], image["cmd"])
    assert argv[:2] == ["deepserve", "run"]
    # tini is process 1: it forwards SIGTERM and reaps orphans. The check
    # runs the image without it: its installation is a skipped apt step of
    # the runtime stage.
    assert image["entrypoint"][:2] == ["tini", "--"]
    steps = check.parse(DOCKERFILE.read_text())
    last = max(n for n, ins in enumerate(steps) if ins.keyword == "FROM")
    skipped = [i.text for i in steps[last:] if i.keyword == "RUN" and i.skip]
    assert [t for t in skipped if re.search(r"apt-get install [^&]*\btini\b", t)]
    settings, _ = config.load(argv[2:], {}, default_config_files=[])
    assert (settings.listen_ip, settings.listen_port) == ("0.0.0.0", 5000)


def test_manifests_agree_with_the_image_and_the_server(image, tmp_path):
    res = resources()
    assert problems(res, image, tmp_path) == []
    settings = settings_of(res, image, tmp_path / "again")
    # What the kit means to set, as deepserve reads it: the database from
    # the Secret's file, and on no command line.
    jobs_conf = secret_value(res, {"name": "deepserve", "key": "jobs.conf"})
    assert jobs_conf is not None
    url = re.search(r"^database = (\S+)$", jobs_conf, re.M)
    assert url is not None and "$" not in url.group(1)
    assert settings.jobs.database == url.group(1)
    assert f"--config-file={SECRET_CONFIG}" in container(res)["args"]
    assert not [a for a in container(res)["args"] if "postgresql" in a]
    assert settings.api.auth_tokens == ("CHANGE-ME-to-a-long-random-string",)
    assert settings.log_format == "json"
    # The ConfigMap's file was read.
    assert settings.executor.predict_timeout == 20
    assert settings.executor.max_queue == 64


def test_the_docs_say_to_write_a_dollar_twice():
    # oslo.config reads ``$name`` in a file's value as another option: the
    # docs and the example Secret say to write ``$`` as ``$$``
    # (tests/test_config.py checks that on both oslo.config versions).
    assert "``$$``" in (ROOT / "doc" / "deploying.rst").read_text()
    assert '"$$"' in EXAMPLE_SECRET.read_text()


def _set(path: list[Any], value: Any) -> Callable[[dict[str, Any]], None]:
    def spoil(res: dict[str, Any]) -> None:
        node = res
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return spoil


POD = ["Deployment", "spec", "template"]
CONTAINER = [*POD, "spec", "containers", 0]


def _args(change: Callable[[list[str]], list[str]]) -> Callable[[dict[str, Any]], None]:
    def spoil(res: dict[str, Any]) -> None:
        c = container(res)
        c["args"] = change(c["args"])

    return spoil


@pytest.mark.parametrize(
    ("spoil", "expected"),
    [
        (_set([*POD, "spec", "terminationGracePeriodSeconds"], 30),
         "terminationGracePeriodSeconds (30) leaves less than"),
        (_args(lambda a: [*a, "--shutdown-grace=60"]),
         "--shutdown-grace (60)"),
        (_set([*CONTAINER, "readinessProbe", "httpGet", "path"], "/healthz"),
         "readinessProbe asks /healthz, not /v2/health/ready"),
        (_set([*CONTAINER, "livenessProbe", "httpGet", "port"], 8080),
         "livenessProbe asks port 8080, not 5000"),
        (_args(lambda a: [*a, "--base-path=/models"]),
         "startupProbe asks /v2/health/ready, not /models/v2/health/ready"),
        (_args(lambda a: [*a, "--listen-port=8000"]),
         "containerPort is not the listen port 8000"),
        (_args(lambda a: [*a, "--listen-ip=127.0.0.1"]),
         "the server listens on 127.0.0.1"),
        (_set(["Service", "spec", "ports", 0, "targetPort"], 8080),
         "the Service's targetPort 8080 is not the listen port 5000"),
        (_set(["Service", "spec", "selector"], {"app": "other"}),
         "the Service's selector does not select the pods"),
        (_set([*POD, "metadata", "annotations", "prometheus.io/port"], "9090"),
         "prometheus.io/port is not 5000"),
        (_args(lambda a: [x for x in a if x != "--noauth-metrics"]),
         "with a token, /metrics needs it"),
        (_set([*CONTAINER, "env", 0, "valueFrom", "secretKeyRef", "key"], "db-url"),
         "reads key db-url of Secret deepserve"),
        (_set(["Secret", "stringData", "jobs.conf"], "[jobs]\ndatabase = postgresql://db/x\n"),
         "the jobs database is postgresql, not PostgreSQL through psycopg"),
        (_set(["Secret", "stringData", "jobs.conf"], "[jobs]\ndatabase = postgresql+psycopg://u:pa$word@db/x\n"),
         "deepserve run refuses the container's options"),
        (_set([*POD, "spec", "volumes", 1, "secret", "items", 0, "key"], "db.conf"),
         "volume secret reads key db.conf of Secret deepserve"),
        (_set([*POD, "spec", "volumes", 1, "secret", "defaultMode"], 0o444),
         "the Secret's files are readable by every user (defaultMode 0444)"),
        (_set([*CONTAINER, "volumeMounts", 1, "readOnly"], False),
         "volume secret is not mounted readOnly"),
        (_args(lambda a: [*a, "--jobs-database=postgresql+psycopg://u:p@db/x"]),
         "the jobs database is on the command line (--jobs-database)"),
        (_args(lambda a: [*a, "--jobs-database", "postgresql+psycopg://u:p@db/x"]),
         "the jobs database is on the command line (--jobs-database)"),
        (_set([*POD, "spec", "securityContext", "runAsUser"], 0),
         "runAsUser is not the image's user 10001"),
        (_set([*POD, "spec", "securityContext", "seccompProfile"], {"type": "Unconfined"}),
         "no seccomp profile"),
        (_set([*CONTAINER, "securityContext", "readOnlyRootFilesystem"], False),
         "the root file system is writable"),
        (_set([*CONTAINER, "volumeMounts", 3, "mountPath"], "/data"),
         "nothing writable is mounted at /home/deepserve"),
        (_set([*CONTAINER, "lifecycle", "preStop", "exec", "command"], ["sleep", "20"]),
         "after the preStop sleep (20)"),
        (_set(["ConfigMap", "data", "deepserve.conf"], "[DEFAULT]\npredict_timeout = 40\n"),
         "predict_timeout (40) is not below --shutdown-grace (30)"),
        (_args(lambda a: [*a, "--config-file=/etc/deepserve/other.conf"]),
         "deepserve run refuses the container's options"),
        (_set([*CONTAINER, "image"], "example.org/other:1.0"),
         "kustomization.yaml's images do not name example.org/other:1.0"),
    ],
)  # fmt: skip
def test_each_disagreement_is_caught(image, tmp_path, spoil, expected):
    """The checks above are not vacuous: each mistake is named."""
    res = copy.deepcopy(resources())
    spoil(res)
    found = problems(res, image, tmp_path)
    assert any(expected in p for p in found), found


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda i: i.update(user="deepserve"), "is not a numeric non-root id"),
        (lambda i: i.update(expose=["8080"]), "the image does not EXPOSE 5000"),
        (
            lambda i: i.update(healthcheck=["python", "-c", "print('ok')"]),
            "HEALTHCHECK does not ask :5000/v2/health/ready",
        ),
        (
            lambda i: i.update(entrypoint=["deepserve", "run"]),
            "the server listens on 127.0.0.1",
        ),
    ],
)
def test_each_disagreement_with_the_image_is_caught(image, tmp_path, change, expected):
    spoilt = copy.deepcopy(image)
    change(spoilt)
    found = problems(resources(), spoilt, tmp_path)
    assert any(expected in p for p in found), found


# --- the Dockerfile's steps, run -------------------------------------------------


#: The Python the check stands in with: this one, named as the Dockerfile's
#: PYTHON_VERSION (the check refuses an image of another Python).
HOST_PYTHON = "{}.{}".format(*sys.version_info[:2])


def run_check(
    *args: str, timeout: float = 600, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The check, for this machine's Python (unless ``args`` name one)."""
    if not any(a.startswith("PYTHON_VERSION=") for a in args):
        args = ("--build-arg", f"PYTHON_VERSION={HOST_PYTHON}", *args)
    return subprocess.run(
        [sys.executable, str(CHECK), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=env,
    )


TINY_MODEL = '''\
"""The smallest model package: what a user's MODEL_PACKAGES brings."""


def get_metadata():
    return {"name": "tiny", "description": "installed by MODEL_PACKAGES"}


def predict(**kwargs):
    return {"tiny": True}
'''

TINY_PROJECT = """\
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "tiny-model"
version = "1.0"

[project.entry-points."deepserve.v2.model"]
tiny = "tiny_model"

[tool.setuptools]
py-modules = ["tiny_model"]
"""


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Path]]:
    """deploy/check-dockerfile.py's build of the image, kept, with a model
    package given as MODEL_PACKAGES as users are told to: a directory
    copied into the build context (a copy of the checkout, as
    .dockerignore trims it), named relative to the WORKDIR."""
    context = tmp_path_factory.mktemp("context")
    patterns = check.ignore_patterns((ROOT / ".dockerignore").read_text())
    check.copy_context(ROOT, patterns, context)
    model = context / "models" / "tiny"
    model.mkdir(parents=True)
    (model / "tiny_model.py").write_text(TINY_MODEL)
    (model / "pyproject.toml").write_text(TINY_PROJECT)
    keep = tmp_path_factory.mktemp("image") / "build"
    done = run_check(
        "--dockerfile",
        str(context / "deploy" / "Dockerfile"),
        "--context",
        str(context),
        "--keep",
        str(keep),
        "--build-arg",
        "MODEL_PACKAGES=./models/tiny",
    )
    yield done, keep
    shutil.rmtree(keep, ignore_errors=True)


@pytest.mark.timeout(900)
def test_the_dockerfile_builds_and_its_image_serves(built):
    done, keep = built
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr
    out = done.stdout
    # Only the steps that need root are skipped, each saying why.
    skipped = re.findall(r"^-- \[(\w+) \d+/\d+\] skipped .*: (.*)$", out, re.M)
    assert [stage for stage, _ in skipped] == ["builder", "runtime"]
    assert "git" in skipped[0][1] and "tini" in skipped[1][1]
    assert "build context: " in out
    # The runtime step's deepserve --version: the checkout's version.
    assert f"deepserve {deepserve.__version__}\n" in out
    assert f"stands in as a fresh venv of this machine's Python {HOST_PYTHON}." in out
    assert "No broken requirements found." in out  # its pip check
    assert "HEALTHCHECK fails before the server listens" in out
    assert "HEALTHCHECK passes once the server is ready" in out
    # The model package came in through MODEL_PACKAGES, and is served alone.
    assert "serving: tiny\n" in out
    if os.geteuid() == 0:  # the program ran as the image's user, or says why not
        assert (
            "as uid 10001, gid 10001 (the image's USER" in out
            or "warning: the image's program runs as root, not as uid 10001" in out
        ), out
    assert "SIGTERM: stopped with status 0" in out
    assert out.rstrip().endswith("and its image served")
    image = json.loads((keep / "image.json").read_text())
    venv = Path(image["root"]) / "opt" / "deepserve"
    wheels = Path(image["root"]).parent / "stage-1-builder" / "wheels"
    # The wheel was built from the checkout, with the PostgreSQL extra.
    names = {p.name.split("-")[0].lower() for p in wheels.glob("*.whl")}
    assert {"deepserve", "tiny_model", "psycopg", "psycopg_binary"} <= names
    # The build context left out what .dockerignore names.
    context = keep / "context"
    assert (context / "setup.cfg").is_file() and (context / "deepserve").is_dir()
    assert not (context / ".git").exists() and not (context / "tests").exists()
    assert not list(context.rglob("__pycache__"))
    assert (venv / "bin" / "deepserve").exists()


@pytest.mark.timeout(300)
def test_a_failing_step_fails_the_check_naming_its_line(tmp_path):
    broken = tmp_path / "Dockerfile"
    text = DOCKERFILE.read_text().replace(
        "pip wheel --wheel-dir", "pip wheeel --wheel-dir"
    )
    broken.write_text(text)
    line = next(
        n
        for n, t in enumerate(text.splitlines(), 1)
        if t.startswith("RUN --mount=type=cache")
    )
    done = run_check("--dockerfile", str(broken), "--context", str(ROOT))
    assert done.returncode == 1, done.stdout + done.stderr
    assert (
        f"check-dockerfile: error: {broken}:{line}: RUN exited with status"
        in done.stderr
    )
    assert "== [runtime" not in done.stdout  # stopped at the broken step


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        # A system step without its skip mark would run here: refused.
        (
            lambda t: t.replace("# check-dockerfile: skip: a system package (git", "# (git"),
            "RUN runs apt-get, which would change this machine",
        ),
        # A step writing outside the directories the check copies: refused.
        (
            lambda t: t.replace(
                "ARG MODEL_PACKAGES", "RUN python -m pip --version > /var/log/x\nARG MODEL_PACKAGES"
            ),
            "RUN names /var/log/x, which the check does not give the stage",
        ),
        (
            lambda t: t.replace("FROM python:${PYTHON_VERSION}-slim-bookworm AS builder", "FROM debian:13 AS builder"),
            "the check stands in for python:* images only, not debian:13",
        ),
        (
            lambda t: t.replace("# check-dockerfile: skip: a system package (tini)", "# check-dockerfile: skip: x\nENV A=1\n#"),
            "comment must stand above a RUN, not ENV",
        ),
    ],
    ids=["unmarked-system-step", "path-outside", "other-base-image", "skip-above-env"],
)  # fmt: skip
def test_steps_the_check_cannot_run_safely_are_refused(tmp_path, change, expected):
    broken = tmp_path / "Dockerfile"
    broken.write_text(change(DOCKERFILE.read_text()))
    done = run_check("--dockerfile", str(broken), "--context", str(ROOT), timeout=300)
    assert done.returncode == 1, done.stdout + done.stderr
    assert expected in done.stderr
    assert done.stderr.startswith(f"check-dockerfile: error: {broken}:")


def _small_dockerfile(tmp_path: Path, *steps: str) -> Path:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(
        "ARG PYTHON_VERSION=3.12\n"
        "FROM python:${PYTHON_VERSION}-slim-bookworm AS only\n"
        "WORKDIR /src\n" + "".join(f"RUN {step}\n" for step in steps)
    )
    return dockerfile


#: Where an escaping step would have written (CI runs the check as root).
def _outside(name: str) -> list[Path]:
    return [
        Path.home() / name,
        Path("/") / name,
        Path("/tmp") / name,
        Path("/usr/bin") / name,
        Path("/bin") / name,
        Path(os.environ.get("PIP_CACHE_DIR", Path.home() / ".cache" / "pip")) / name,
    ]


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        ("touch ~/NAME", "RUN names ~ (a home directory)"),
        ('touch "$HOME/NAME"', "RUN names $HOME (the home directory)"),
        ("touch ${HOME}/NAME", "RUN names ${HOME (the home directory)"),
        ("cd ../../.. && echo x > NAME", "RUN names .. (a parent directory)"),
        ("echo x > ./../../NAME", "RUN names .. (a parent directory)"),
        ("echo x > /usr/bin/NAME", "RUN names /usr/bin/NAME,"),
        ("cp /bin/sh /bin/NAME", "RUN names /bin/sh,"),
        ("echo x > /NAME", "RUN names /NAME,"),
    ],
    ids=["tilde", "home", "home-braces", "parent-cd", "parent-path", "usr-bin", "bin", "root"],
)  # fmt: skip
def test_a_step_naming_a_place_outside_the_build_is_refused(tmp_path, step, expected):
    name = f"check-dockerfile-escape-{os.getpid()}-{tmp_path.name}"
    dockerfile = _small_dockerfile(
        tmp_path, "echo ok > /dev/null", step.replace("NAME", name)
    )
    done = run_check(
        "--dockerfile", str(dockerfile), "--context", str(tmp_path), timeout=120
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert expected.replace("NAME", name) in done.stderr
    assert f"{dockerfile}:5: RUN names" in done.stderr  # the /dev/null step ran
    assert [p for p in _outside(name) if p.exists()] == []


@pytest.mark.timeout(300)
def test_a_step_writes_its_home_and_temporary_files_in_the_stage(tmp_path):
    """What no text reveals lands in the stage: HOME is the image's root
    home (``/root``) in the stage, TMPDIR its ``/tmp``, pip's cache the
    check's own; this machine's pip settings other than its package
    sources (PIP_TARGET here, which would send installs elsewhere) and
    configuration files do not reach the steps."""
    name = f"check-dockerfile-confined-{os.getpid()}"
    outside = tmp_path / "outside"
    dockerfile = _small_dockerfile(
        tmp_path,
        'python -c "import os, pathlib, tempfile; '
        f"pathlib.Path(os.environ['HO' + 'ME'], '{name}').write_text('home'); "
        f"pathlib.Path(tempfile.gettempdir(), '{name}').write_text('tmp'); "
        f"pathlib.Path(os.path.expanduser(chr(126)), '{name}.2').write_text('home')\"",
        'python -c "import os, sys; '
        "sys.exit(3 if 'PIP_TARGET' in os.environ else 0)\"",
        'test "$PIP_CONFIG_FILE" = /dev/null && python -m pip config list > /dev/null',
        "python -m pip cache dir > /src/cache-dir",
    )
    keep = tmp_path / "keep"
    env = {**os.environ, "PIP_TARGET": str(outside), "PIP_LOG": str(outside / "log")}
    done = run_check(
        "--dockerfile", str(dockerfile), "--context", str(tmp_path), "--keep", str(keep),
        env=env,
    )  # fmt: skip
    # Every step ran: the image, without HEALTHCHECK, is what fails.
    assert "the image has no HEALTHCHECK" in done.stderr, done.stdout + done.stderr
    stage = keep / "stage-1-only"
    assert (stage / "root" / name).read_text() == "home"
    assert (stage / "root" / f"{name}.2").read_text() == "home"
    assert (stage / "tmp" / name).read_text() == "tmp"
    cache = Path((stage / "src" / "cache-dir").read_text().strip())
    assert cache.is_relative_to(keep)
    assert [p for p in _outside(name) if p.exists()] == []
    assert not outside.exists()


def test_a_build_arg_naming_a_place_outside_the_build_is_refused(tmp_path):
    for value, named in (
        ("/var/models/tiny", "/var/models/tiny"),
        ("./models/../../tiny", ".. (a parent directory)"),
        ("~/models/tiny", "~ (a home directory)"),
    ):
        done = run_check("--build-arg", f"MODEL_PACKAGES={value}", timeout=120)
        assert done.returncode == 1, done.stdout + done.stderr
        assert f"build arg MODEL_PACKAGES names {named}, outside" in done.stderr
        assert "./models/my-model" in done.stderr
        assert "== [builder" in done.stdout and "pip wheel" not in done.stdout


def test_an_image_of_another_python_is_refused_unless_one_is_given(tmp_path):
    """python:3.99 is not this machine's Python, and no python3.99 is on
    PATH: the check says so instead of standing in with the wrong one."""
    done = run_check("--build-arg", "PYTHON_VERSION=3.99", timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr
    assert (
        f"FROM python:3.99-slim-bookworm wants Python 3.99: this is {HOST_PYTHON}, "
        "and no python3.99 is on PATH; give --build-arg "
        f"PYTHON_VERSION={HOST_PYTHON}, or --python PATH"
    ) in done.stderr
    # --python names the one to use.
    dockerfile = _small_dockerfile(
        tmp_path, "python -c 'import sys; print(sys.version)'"
    )
    done = run_check(
        "--dockerfile", str(dockerfile), "--context", str(tmp_path),
        "--build-arg", "PYTHON_VERSION=3.99", "--python", sys.executable,
        timeout=120,
    )  # fmt: skip
    assert "the image has no HEALTHCHECK" in done.stderr, done.stdout + done.stderr
    assert f"this machine's Python {HOST_PYTHON}." in done.stdout


AS_USER_SCRIPT = """\
import os, pathlib, sys
print(os.getuid(), os.getgid(), os.getgroups())
for place in (os.environ["HOME"], os.environ["TMPDIR"]):
    pathlib.Path(place, "written").write_text("x")
try:
    pathlib.Path(sys.argv[1], "written").write_text("x")
except PermissionError:
    print("stage root: not writable")
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="what the check does as root")
def test_as_root_the_image_runs_as_its_user_writing_only_home_and_tmp():
    """docker run starts the image's program as its USER: the check, run
    as root (CI), drops to that uid and gid, with only the home and /tmp
    stand-ins its own."""
    system = shutil.which(f"python{HOST_PYTHON}", path="/usr/local/bin:/usr/bin")
    if system is None:
        pytest.skip(f"no python{HOST_PYTHON} that every user may run")
    work = Path(tempfile.mkdtemp(prefix="check-as-user-"))
    try:
        root = work / "stage-2-runtime"
        (root / "opt").mkdir(parents=True)
        venv = work / "python"
        subprocess.run([system, "-m", "venv", "--without-pip", str(venv)], check=True)
        stage = check.Stage("runtime", 2, root, python=venv)
        stage.user = "10001:10001"
        stage.env = {"HOME": "/home/deepserve", "PATH": check.IMAGE_PATH}
        env = stage.host_env({"LANG": "C.UTF-8"})
        said: list[str] = []
        drop = check.as_image_user(stage, env, said.append)
        assert drop is not None, said
        assert said == [
            "   as uid 10001, gid 10001 (the image's USER; this check runs as "
            "root): only the home and /tmp stand-ins are writable"
        ]
        assert env["HOME"] == str(root / "home" / "deepserve")
        assert env["TMPDIR"] == str(root / "tmp")
        done = subprocess.run(
            [str(venv / "bin" / "python"), "-c", AS_USER_SCRIPT, str(root / "opt")],
            env=env,
            cwd="/",
            capture_output=True,
            text=True,
            preexec_fn=drop,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines() == [
            "10001 10001 []",
            "stage root: not writable",
        ]
        assert (root / "home" / "deepserve" / "written").stat().st_uid == 10001
        assert (root / "tmp" / "written").is_file()
        assert not (root / "opt" / "written").exists()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_a_wrong_command_line_is_a_usage_error(tmp_path):
    done = run_check("--build-arg", "NOVALUE")
    assert done.returncode == 2
    assert "--build-arg wants NAME=VALUE, got 'NOVALUE'" in done.stderr
    (tmp_path / "x").write_text("")
    done = run_check("--keep", str(tmp_path))
    assert done.returncode == 2
    assert "is not empty" in done.stderr


def test_dockerignore_patterns_match_as_docker_matches_them():
    patterns = check.ignore_patterns((ROOT / ".dockerignore").read_text())
    left_out = [
        ".git/config",
        ".venv/bin/python",
        ".venv-deepaas/lib/x.py",
        "deepserve/api/__pycache__/app.cpython-311.pyc",
        "deepserve.egg-info/PKG-INFO",
        "build/lib/deepserve/old_module.py",
        "tests/test_deploy.py",
        "doc/_build/html/index.html",
        # Manifests are no part of the image: changing one rebuilds nothing.
        "deploy/kubernetes/deployment.yaml",
        "deploy/examples/secret.yaml",
    ]
    kept = [
        "setup.cfg",
        "setup.py",
        "README.rst",
        "deepserve/api/app.py",
        "deploy/Dockerfile",
    ]
    assert [p for p in left_out if not check.ignored(p, patterns)] == []
    assert [p for p in kept if check.ignored(p, patterns)] == []
    # Docker's own rules: a name matches at the root only, ** anywhere,
    # and the last matching pattern wins ("!" takes a path back).
    rules = check.ignore_patterns("*.log\n**/*.tmp\ndata\n!data/keep.txt\n")
    assert check.ignored("a.log", rules) and not check.ignored("sub/a.log", rules)
    assert check.ignored("a.tmp", rules) and check.ignored("x/y/a.tmp", rules)
    assert check.ignored("data/big.bin", rules)
    assert not check.ignored("data/keep.txt", rules)


# --- the pod, as Kubernetes would run it -----------------------------------------


def _get(url: str, token: str | None = None) -> tuple[int, str, str]:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return (
                resp.status,
                resp.headers.get("Content-Type", ""),
                resp.read().decode(),
            )
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.headers.get("Content-Type", ""), exc.read().decode()


def _post(url: str, token: str | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, data=b"", method="POST")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read().decode()


@pytest.mark.timeout(900)
def test_the_pod_serves_as_its_manifests_say(built, postgres, tmp_path):
    """The Deployment's container, from the built image: its args, its
    variables from the Secret (the database URL a real PostgreSQL's), its
    ConfigMap file and volumes; probed, scraped and stopped as Kubernetes
    would."""
    done, keep = built
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr
    image = json.loads((keep / "image.json").read_text())
    res = resources()
    database = postgres.new_database()
    token = secret_value(res, {"name": "deepserve", "key": "auth-token"})
    env = container_env(res)
    # The Secret's jobs.conf, as doc/deploying.rst says to write it.
    jobs_conf = "[jobs]\ndatabase = " + database.replace("$", "$$") + "\n"
    pod = Pod(res, tmp_path, {"jobs.conf": jobs_conf})
    argv = effective_argv(res, image, env, pod.host)
    # The URL and its password are in a file, on no command line.
    assert not [a for a in argv if database in a or "postgresql" in a]
    port = free_port()
    # The image's variables, its directories moved where the check built
    # them, except those a volume of the pod covers.
    stage = check.Stage("runtime", 2, Path(image["root"]), python=Path(image["python"]))
    stage.env = dict(image["env"])
    process_env = {
        **stage.host_env({"LANG": "C.UTF-8"}),
        **{k: pod.host(v) for k, v in image["env"].items() if pod.host(v) != v},
        **env,
        "TMPDIR": str(pod.mounts["/tmp"]),
    }
    # The image's HOME is a volume of the pod.
    assert process_env["HOME"] == str(pod.mounts[image["env"]["HOME"]])
    c = container(res)
    log = tmp_path / "server.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [*argv, f"--listen-port={port}"],
            env=process_env,
            cwd=pod.host(image["workdir"]),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        startup = c["startupProbe"]
        budget = startup["periodSeconds"] * startup["failureThreshold"]
        deadline = time.monotonic() + min(budget, 120)
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                if _get(base + startup["httpGet"]["path"])[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.3)
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            status, kind, body = _get(base + c[probe]["httpGet"]["path"])
            assert status == 200 and kind.startswith("application/json"), body
            assert json.loads(body) in ({"ready": True}, {"live": True})

        # Prometheus scrapes where the annotations say, without a token.
        notes = res["Deployment"]["spec"]["template"]["metadata"]["annotations"]
        status, kind, body = _get(base + notes["prometheus.io/path"])
        assert status == 200 and kind.startswith("text/plain"), body
        assert "deepserve_requests_total" in body

        # The models listed are the image's (MODEL_PACKAGES), and the
        # Secret's token turned authentication on for predictions.
        status, _, body = _get(base + "/v2/models/")
        assert [m["id"] for m in json.loads(body)["models"]] == ["tiny"]
        predict = base + "/v2/models/tiny/predict/"
        assert _post(predict)[0] == 401
        status, body = _post(predict, token)
        assert status == 200, body
        assert json.loads(body)["predictions"] == {"tiny": True}

        # The Secret's database URL: deepserve made its tables there.
        import psycopg

        conninfo = database.replace("postgresql+psycopg://", "postgresql://", 1)
        with psycopg.connect(conninfo) as conn:
            tables = {
                row[0]
                for row in conn.execute(
                    "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
                )
            }
        assert {"deepserve_jobs", "deepserve_job_logs"} <= tables

        # Termination: after the preStop sleep, SIGTERM; the server must be
        # gone well before the kubelet's SIGKILL.
        pre_stop = float(c["lifecycle"]["preStop"]["exec"]["command"][1])
        grace = res["Deployment"]["spec"]["template"]["spec"][
            "terminationGracePeriodSeconds"
        ]
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        status = proc.wait(timeout=grace - pre_stop)
        assert status == 0, log.read_text()
        assert time.monotonic() - started < grace - pre_stop
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    lines = [
        json.loads(line)
        for line in log.read_text().splitlines()
        if line.startswith("{")
    ]
    assert lines, "--log-format=json: no JSON log line"
    assert "CHANGE-ME" not in log.read_text() and database not in log.read_text()
