"""The container files, linted where no docker runs: the Dockerfile's instructions (non-root,
healthcheck on a real route, a CPU torch at the project's pin, every COPY source present and
not ignored), and compose.yaml (parses; its paths, ports and ENDCLOUD_* names are real ones)."""

from __future__ import annotations

import fnmatch
import re
import shlex
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile: comments dropped, continuations joined."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = (pending + stripped).strip()
        pending = ""
        word, _, rest = full.partition(" ")
        out.append((word.upper(), rest.strip()))
    assert not pending, "the Dockerfile ends inside a continued line"
    return out


@pytest.fixture(scope="module")
def dockerfile():
    return instructions((ROOT / "Dockerfile").read_text(encoding="utf-8"))


def _stages(ins):
    stages: list[list[tuple[str, str]]] = []
    for word, rest in ins:
        if word == "FROM":
            stages.append([])
        elif word not in ("ARG",):
            assert stages, f"{word} before any FROM"
        if stages:
            stages[-1].append((word, rest))
    return stages


def _env(ins) -> dict[str, str]:
    env: dict[str, str] = {}
    for word, rest in ins:
        if word == "ENV":
            for item in shlex.split(rest):
                k, _, v = item.partition("=")
                env[k] = v
    return env


def _known_variables() -> set[str]:
    from endcloud.cli.config import sections
    from endcloud.config import ENV_HOME
    from endcloud.configfile import CONFIG_ENV

    return {k.env for s in sections() for k in s.keys} | {ENV_HOME, CONFIG_ENV}


def test_dockerfile_is_well_formed(dockerfile):
    known = {"FROM", "ARG", "ENV", "RUN", "COPY", "USER", "WORKDIR", "VOLUME", "EXPOSE", "HEALTHCHECK", "ENTRYPOINT",
             "CMD", "LABEL"}
    assert {w for w, _ in dockerfile} <= known, {w for w, _ in dockerfile} - known
    args = {rest.split("=", 1)[0]: rest.split("=", 1)[1] for w, rest in dockerfile if w == "ARG" and "=" in rest}
    for w, rest in dockerfile:
        if w == "FROM":
            image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], rest.split()[0])
            assert ":" in image and not image.endswith(":latest"), f"FROM {image}: pin a tag"


def test_runs_as_a_non_root_user_with_the_workspace_as_a_volume(dockerfile):
    final = _stages(dockerfile)[-1]
    users = [rest for w, rest in final if w == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), users
    words = [w for w, _ in final]
    assert words.index("USER") < words.index("ENTRYPOINT") and words.index("USER") < words.index("CMD")
    assert any("useradd" in rest and "endcloud" in rest for w, rest in final if w == "RUN")
    env = _env(final)
    volumes = [v for w, rest in final if w == "VOLUME" for v in yaml.safe_load(rest)]
    assert env["ENDCLOUD_HOME"] in volumes  # the workspace outlives the container
    assert [rest for w, rest in final if w == "EXPOSE"] == [env["ENDCLOUD_SERVE_PORT"]]
    assert env["ENDCLOUD_DEVICE"] == "cpu"
    unknown = {k for k in env if k.startswith("ENDCLOUD_")} - _known_variables()
    assert not unknown, f"ENV names no setting: {unknown}"


def test_healthcheck_asks_a_real_readiness_route(dockerfile):
    from endcloud.serve.routes import router

    checks = [rest for w, rest in dockerfile if w == "HEALTHCHECK"]
    assert len(checks) == 1
    path = re.search(r"127\.0\.0\.1:[^/]+(/\w+)", checks[0]).group(1)
    routes = {getattr(r, "path", None) for r in router.routes}
    assert path in ("/readyz", "/healthz") and path in routes
    assert "--start-period" in checks[0]  # loading the end model must not count as failing


def test_torch_is_the_cpu_build_at_the_projects_pin(dockerfile):
    pins = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
    torch_pin = next(p for p in pins if p.startswith("torch=="))
    runs = [rest for w, rest in dockerfile if w == "RUN"]
    first_pip = next(i for i, r in enumerate(runs) if "pip install" in r)
    assert "download.pytorch.org/whl/cpu" in runs[first_pip] and torch_pin in runs[first_pip]  # torch first
    assert not any(re.search(r"cuda|cu\d{2,3}\b|nvidia", r, re.I) for r in runs)
    assert any("requirements.lock" in r for r in runs)


def _ignored(path: str, patterns: list[str]) -> bool:
    hit = False
    for pat in patterns:
        neg = pat.startswith("!")
        pat = pat.lstrip("!").rstrip("/")
        if fnmatch.fnmatch(path, pat) or fnmatch.fnmatch(path.split("/")[0], pat) or fnmatch.fnmatch(path, pat + "/*"):
            hit = not neg
    return hit


def test_every_copied_file_exists_and_is_not_dockerignored(dockerfile):
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
                if line.strip() and not line.startswith("#")]
    copies = [rest for w, rest in dockerfile if w == "COPY" and not rest.startswith("--from")]
    assert copies
    for rest in copies:
        *sources, _dest = rest.split()
        for src in sources:
            assert (ROOT / src).exists(), f"COPY {src}: no such file in the repository"
            assert not _ignored(src, patterns), f"COPY {src}: excluded by .dockerignore"
    for heavy in (".venv", ".git", "endcloud-work", "tests"):
        assert _ignored(heavy, patterns), f"{heavy} would be sent to the docker daemon"
    # what `pip install /src` needs: the package data too (the shipped reader, the widget, the pages)
    assert (ROOT / "endcloud" / "serve" / "static" / "widget.js").exists()


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load((ROOT / "compose.yaml").read_text(encoding="utf-8"))


def _interpolate_default(value: str) -> str:
    """`${VAR:-default}` -> default; `${VAR:?msg}` -> "<required>" (what compose does with VAR unset)."""
    value = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", str(value))
    return re.sub(r"\$\{\w+:\?[^}]*\}", "<required>", value)


def test_compose_service_builds_this_image_and_keeps_the_workspace(compose, dockerfile):
    svc = compose["services"]["endcloud"]
    assert (ROOT / svc["build"] / "Dockerfile").exists() if isinstance(svc["build"], str) else True
    env = _env(_stages(dockerfile)[-1])
    mounts = [m.split(":") for m in svc["volumes"]]
    assert any(src in compose["volumes"] and dst == env["ENDCLOUD_HOME"] for src, dst, *_ in mounts)
    ports = [_interpolate_default(p).split(":") for p in svc["ports"]]
    assert [p[-1] for p in ports] == [env["ENDCLOUD_SERVE_PORT"]]
    unknown = {k for k in svc["environment"] if k.startswith("ENDCLOUD_")} - _known_variables()
    assert not unknown, f"compose sets variables no setting reads: {unknown}"
    # listening on 0.0.0.0 needs an admin token: compose must refuse to start without one
    assert _interpolate_default(svc["environment"]["ENDCLOUD_SERVE_ADMIN_TOKEN"]) == "<required>"


def test_compose_vllm_service_matches_the_engine_settings(compose):
    from endcloud.config import Workspace
    from endcloud.paper import PAPER
    from endcloud.runtime.vllm import ENV_BASE_URL, ENV_MODEL, is_private_host
    from urllib.parse import urlsplit

    vllm = compose["services"]["vllm"]
    assert vllm["profiles"] == ["vllm"]  # optional: `docker compose --profile vllm up`
    image = _interpolate_default(vllm["image"])
    assert ":" in image and not image.endswith(":latest")
    args = dict(a.lstrip("-").split("=", 1) if "=" in a else (a.lstrip("-"), True) for a in
                (_interpolate_default(x) for x in vllm["command"]))
    env = {k: _interpolate_default(v) for k, v in compose["services"]["endcloud"]["environment"].items()}
    url = urlsplit(env[ENV_BASE_URL])
    aliases = vllm["networks"]["default"]["aliases"]
    assert url.hostname in aliases + ["vllm"] and url.port == int(args["port"])
    assert is_private_host(url.hostname)  # accepted without ENDCLOUD_VLLM_ALLOW_REMOTE
    assert args["served-model-name"] == env[ENV_MODEL]
    assert args.get("enable-lora") is True and int(args["max-lora-rank"]) >= PAPER.lora_r
    assert vllm["environment"]["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"  # swap_adapter needs it
    # it serves the workspace's base/ and loads adapters by the paths endcloud sends: the same volume, same path
    home = "/work"
    assert args["model"] == str(Workspace(Path(home)).base)
    assert any(m.split(":")[1] == home for m in vllm["volumes"])


def test_deploy_docs_name_the_files():
    text = (ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")
    for needle in ("Dockerfile", "compose.yaml", "--profile vllm", "/widget.js", "endcloud.toml", "config show"):
        assert needle in text, needle
