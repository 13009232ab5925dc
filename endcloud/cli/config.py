"""CLI commands of the config file: `endcloud config show` prints every setting in force and
where each came from; `sections()` declares what the file may hold.

    endcloud config show                         # <workspace>/endcloud.toml, $ENDCLOUD_*, defaults
    endcloud config show --config shop.toml --json
    endcloud serve --config shop.toml --show-config --port 9000    # ... with serve's flags

The layering itself (flag > env > file > default) is `endcloud.configfile`; this module is the
registry of sections, here because it names the settings of every room.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

import typer

from endcloud.configfile import Key, Resolved, Section, dataclass_keys, find_config, load_file, render, resolve

SERVE_SECRETS = ("admin_token", "api_keys", "customer_secret")


@lru_cache(maxsize=1)
def sections() -> tuple[Section, ...]:
    """The tables of `endcloud.toml`, in the order `config show` prints them."""
    from endcloud.cli.privacy import RETENTION_ENV
    from endcloud.cloud.ledger import ENV_PRICE, ENV_PRICES
    from endcloud.cloud.openai_backend import (ENV_API_KEY, ENV_BASE_URL, ENV_CONCURRENCY, ENV_MODEL, ENV_RPM,
                                               ENV_TIMEOUT, ENV_TPM)
    from endcloud.end.device import DEVICE_ENV, DTYPE_ENV, TRUST_ENV
    from endcloud.evolve.loop import EvolveSettings
    from endcloud.privacy.extra import NER_ENV
    from endcloud.runtime import vllm
    from endcloud.serve.settings import ENV_PREFIX, ServeSettings

    serve = Section("serve", dataclass_keys(ServeSettings, ENV_PREFIX, secrets=SERVE_SECRETS), "`endcloud serve` (ServeSettings)")
    end = Section("end", (
        Key("device", DEVICE_ENV, "auto", "where the in-process end model runs: auto, cpu, cuda or cuda:N (--device)"),
        Key("dtype", DTYPE_ENV, "auto", "end model precision: auto, fp32, bf16 or fp16 (--dtype)"),
        Key("trust_remote_code", TRUST_ENV, False, "run the Python code a base folder ships (--trust-remote-code)"),
    ), "the end model, for every command that loads it")
    evolve = Section("evolve", _evolve_keys(EvolveSettings), "the online loop (`endcloud evolve`, `serve --evolve`)")
    cloud = Section("cloud", (
        Key("base_url", ENV_BASE_URL, None, "the cloud teacher's OpenAI-compatible endpoint (set: the openai teacher)"),
        Key("model", ENV_MODEL, None, "the cloud model's name"),
        Key("api_key", ENV_API_KEY, None, "the cloud's API key", secret=True),
        Key("timeout", ENV_TIMEOUT, 30.0, "seconds per cloud request"),
        Key("concurrency", ENV_CONCURRENCY, 8, "cloud requests in flight at once"),
        Key("rpm", ENV_RPM, None, "requests per minute the cloud allows (unset: no limit)"),
        Key("tpm", ENV_TPM, None, "tokens per minute the cloud allows (unset: no limit)"),
        Key("price", ENV_PRICE, None, "price per million tokens, 'IN,OUT' (needed for a budget)"),
        Key("prices", ENV_PRICES, None, "a JSON file of {model: [in, out]} prices"),
    ), "the cloud teacher (takeovers, labels), always behind the privacy gate")
    vllm_section = Section("vllm", (
        Key("base_url", vllm.ENV_BASE_URL, None, "the shop's vLLM server (--engine vllm), e.g. http://127.0.0.1:8001/v1"),
        Key("model", vllm.ENV_MODEL, None, "vLLM's --served-model-name of the base"),
        Key("api_key", vllm.ENV_API_KEY, None, "vLLM's --api-key", secret=True),
        Key("timeout", vllm.ENV_TIMEOUT, 30.0, "seconds per request to vLLM"),
        Key("allow_remote", vllm.ENV_ALLOW_REMOTE, False, "allow a vLLM host that is not loopback or private"),
    ), "the end model behind a vLLM server (docs/scale.md)")
    privacy = Section("privacy", (
        Key("ner", NER_ENV, None, "a token-classification model folder the redactor runs beside its rules"),
        Key("retention_days", RETENTION_ENV, None, "days of conversations `endcloud privacy retain` keeps"),
    ), "redaction and retention")
    return (serve, end, evolve, cloud, vllm_section, privacy)


EVOLVE_PREFIX = "ENDCLOUD_EVOLVE_"


def _evolve_keys(cls: type) -> tuple[Key, ...]:
    from endcloud.evolve.triggers import TriggerSettings

    keys = dataclass_keys(cls, EVOLVE_PREFIX, skip=("triggers", "checks", "gate"))
    low = TriggerSettings.__dataclass_fields__["low_score"].default
    return keys + (
        Key("low_score", EVOLVE_PREFIX + "LOW_SCORE", low, "Final score (eq. 1) under which a served turn is a lesson"),
        Key("interval_s", EVOLVE_PREFIX + "INTERVAL_S", 30.0, "seconds between steps of `endcloud evolve`"),
    )


def evolve_settings(resolved: list[Resolved], *, competitors: list[str] | tuple[str, ...] = ()) -> tuple[Any, float]:
    """(EvolveSettings, seconds between steps) from the resolved [evolve] table. α and Θ not set
    for evolve (flag, env or file) follow [serve]'s, so the loop scores turns as the server does."""
    from endcloud.configfile import values
    from endcloud.evolve.checks import CheckSettings
    from endcloud.evolve.loop import EvolveSettings
    from endcloud.evolve.triggers import TriggerSettings

    cfg = values(resolved, "evolve")
    for name in ("alpha", "theta"):
        own = next(r for r in resolved if r.section == "evolve" and r.key.name == name)
        served = [r for r in resolved if r.section == "serve" and r.key.name == name]
        if own.source == "default" and served:
            cfg[name] = served[0].value
    interval = float(cfg.pop("interval_s"))
    low_score = float(cfg.pop("low_score"))
    return EvolveSettings(triggers=TriggerSettings(low_score=low_score), checks=CheckSettings(competitors=list(competitors)),
                          **cfg), interval


def settings_in_force(*, config: str | os.PathLike[str] | None = None, workspace: Any = None,
                      flags: Mapping[tuple[str, str], Any] | None = None,
                      env: Mapping[str, str] | None = None) -> tuple[Path | None, dict, list[Resolved]]:
    """(the file read, its tables, every setting resolved) for a command run with `flags`."""
    from endcloud.config import Workspace

    if env is None:  # what the root --config put there came from the file, not the environment
        env = {k: v for k, v in os.environ.items() if k not in _ROOT_APPLIED}
    root = Workspace.resolve(workspace).root
    path = find_config(config, root, env)
    data = load_file(path, sections())
    return path, data, resolve(sections(), file=data, env=env, flags=flags)


def to_json(resolved: list[Resolved], path: Path | None) -> str:
    out: dict[str, Any] = {"file": str(path) if path else None, "settings": {}}
    for r in resolved:
        value = r.shown if r.key.secret else (list(r.value) if isinstance(r.value, tuple) else r.value)
        out["settings"].setdefault(r.section, {})[r.key.name] = {
            "value": value if isinstance(value, (str, int, float, bool, type(None), list)) else str(value),
            "source": r.source, "env": r.key.env}
    return json.dumps(out, ensure_ascii=False, indent=2)


config_app = typer.Typer(help="The config file (endcloud.toml): `config show` prints every setting in force and its source.",
                         no_args_is_help=True)


# help text is rich markup: a bare [serve] would vanish, hence the backslashes below
@config_app.command("show")
def show(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="A TOML config file (default $ENDCLOUD_CONFIG, else <workspace>/endcloud.toml when it exists)."),
    workspace: Optional[Path] = typer.Option(None, "--workspace", "-w", help="Workspace folder (default $ENDCLOUD_HOME or ./endcloud-work)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON: {file, settings: {section: {key: {value, source, env}}}}."),
    section: Optional[str] = typer.Option(None, "--section", help="Only this table (serve, end, evolve, cloud, vllm, privacy)."),
) -> None:
    """Print every setting in force and where it came from: flag > env > file > default.

    Tables: \\[serve] (ENDCLOUD_SERVE_*),
    \\[end] (ENDCLOUD_DEVICE, _DTYPE, _TRUST_REMOTE_CODE), \\[evolve] (ENDCLOUD_EVOLVE_*), \\[cloud]
    (ENDCLOUD_CLOUD_*), \\[vllm] (ENDCLOUD_VLLM_*), \\[privacy] (ENDCLOUD_PRIVACY_NER, ENDCLOUD_RETENTION_DAYS).
    Secrets print as ***."""
    from endcloud.errors import ConfigError

    path, _, resolved = settings_in_force(config=config or root_config(), workspace=workspace)
    if section is not None:
        names = [s.name for s in sections()]
        if section not in names:
            raise ConfigError(f"--section must be one of {', '.join(names)}, got {section!r}")
        resolved = [r for r in resolved if r.section == section]
    typer.echo(to_json(resolved, path) if as_json else render(resolved, path=path))


_ROOT_CONFIG: list[Path] = []  # `endcloud --config PATH <command>`: set by the root callback
_ROOT_APPLIED: set[str] = set()  # the variables that file filled in


def set_root_config(path: Path | None, applied: Iterable[str] = ()) -> None:
    _ROOT_CONFIG.clear()
    _ROOT_APPLIED.clear()
    if path is not None:
        _ROOT_CONFIG.append(path)
        _ROOT_APPLIED.update(applied)


def root_config() -> Path | None:
    return _ROOT_CONFIG[0] if _ROOT_CONFIG else None


def register(app: typer.Typer) -> None:
    """Add this room's commands to the root `endcloud` app."""
    app.add_typer(config_app, name="config")
