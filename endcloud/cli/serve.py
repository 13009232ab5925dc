"""CLI commands of the `serve` room: `endcloud serve` (registered on the root app by `register`).

    endcloud serve                          # the workspace `endcloud demo` built, on 127.0.0.1:8000
    endcloud serve --base models/qwen --shop shops/towels --port 9000
    endcloud serve --host 0.0.0.0 --admin-token "$(openssl rand -hex 32)"   # reachable from elsewhere: needs one
    ENDCLOUD_SERVE_CUSTOMER_SECRET=... endcloud serve token --customer alice --ttl 3600   # what the shop's site signs
    endcloud serve --config shop.toml --show-config   # the settings in force and their source; nothing served

Every setting comes from a flag, else its ENDCLOUD_* variable, else the config file
(`--config`, $ENDCLOUD_CONFIG, or <workspace>/endcloud.toml), else its default
(`endcloud.configfile`); `serve --help` lists the variables.

With nothing built it says which command to run and exits 2 (never a traceback).
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from typer.core import TyperGroup

serve_app = typer.Typer(
    help="Serve the shop's OpenAI-compatible chat API (`endcloud serve --help`), or sign a customer token (`serve token`).",
    invoke_without_command=True, no_args_is_help=False)


class _EnvEpilog(TyperGroup):
    """`serve --help` ends with every ENDCLOUD_SERVE_* variable; built when help is shown, so
    `endcloud --help` does not import the server's settings."""

    def format_help(self, ctx, formatter):
        self.epilog = _variables_epilog()
        return super().format_help(ctx, formatter)


def _variables_epilog() -> str:
    from rich.markup import escape

    from endcloud.cli.config import sections
    from endcloud.configfile import CONFIG_ENV, FILE_NAME, format_value

    lines = [f"Settings: a flag, else its environment variable, else the config file (--config, ${CONFIG_ENV}, or "
             f"<workspace>/{FILE_NAME}), else the default; `--show-config` prints those in force and their source. "
             "The variables (VARIABLE=default; the file's keys are their lower-case tails, in the table named first):"]
    for sec in sections():
        if sec.name in ("serve", "end", "vllm"):
            names = [k.env if k.secret or k.default in (None, ()) else f"{k.env}={format_value(k.default)}" for k in sec.keys]
            lines.append(escape(f"[{sec.name}] " + ", ".join(names)))
    return "\n\n".join(lines)


@serve_app.callback(invoke_without_command=True, cls=_EnvEpilog)
def serve(
    ctx: typer.Context,
    workspace: Optional[Path] = typer.Option(None, "--workspace", "-w", help="Workspace folder (default $ENDCLOUD_HOME or ./endcloud-work)."),
    base: Optional[Path] = typer.Option(None, "--base", help="Local Hugging Face model folder of the end model (default: the workspace's base/)."),
    adapter: Optional[str] = typer.Option(None, "--adapter", help="Adapter to serve: NAME, NAME/vN or a folder (default: the active one)."),
    shop: Optional[Path] = typer.Option(None, "--shop", help="Shop pack folder for knowledge snippets (default: the workspace's shop/)."),
    cloud: Optional[str] = typer.Option(None, "--cloud", help="Takeover teacher: openai, reference or none (default: openai when ENDCLOUD_CLOUD_BASE_URL is set, else reference)."),
    host: Optional[str] = typer.Option(None, "--host", help="Interface to listen on (env ENDCLOUD_SERVE_HOST; default 127.0.0.1)."),
    port: Optional[int] = typer.Option(None, "--port", help="TCP port to listen on (env ENDCLOUD_SERVE_PORT; default 8000)."),
    min_match: Optional[float] = typer.Option(None, "--min-match", help="Matching score below which the cloud takes over (env ENDCLOUD_SERVE_MIN_MATCH; default 0.25)."),
    log_level: str = typer.Option("info", "--log-level", help="uvicorn log level."),
    engine: Optional[str] = typer.Option(None, "--engine", help="End-model engine: transformers (in-process; the default), vllm (a vLLM server in the shop, named by ENDCLOUD_VLLM_BASE_URL / ENDCLOUD_VLLM_MODEL; see docs/scale.md) or llamacpp (GGUF via llama.cpp; the optional extra: pip install endcloud\\[llamacpp]). Default: $ENDCLOUD_SERVE_ENGINE, else transformers."),
    evolve: bool = typer.Option(False, "--evolve/--no-evolve", help="Run the online evolution loop beside the server (rounds train in a background process; promotions hot-swap)."),
    evolve_interval: float = typer.Option(60.0, "--evolve-interval", help="Seconds between evolution steps with --evolve."),
    admin_token: Optional[str] = typer.Option(None, "--admin-token", envvar=["ENDCLOUD_SERVE_ADMIN_TOKEN", "ENDCLOUD_ADMIN_TOKEN"], show_envvar=True, help="Token every admin route requires (sessions, profiles, /review, /dashboard; /metrics from other machines): Authorization: Bearer, X-Endcloud-Admin-Token, or /review?token= once (a cookie then). Unset: admin routes serve loopback clients only, and a non-loopback --host refuses to start."),
    device: Optional[str] = typer.Option(None, "--device", help="Where the in-process end model runs: auto (a GPU when torch sees one), cpu, cuda or cuda:N. On a GPU the model decodes through the transformers forward; --engine transformers-cb adds continuous batching there."),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="End model precision: auto (bf16 on GPUs that have it, fp16 on older ones; on the CPU fp32, bf16 for bases over ~400 MB), fp32, bf16 or fp16."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="Run the Python code the base folder ships (config.json auto_map, e.g. ChatGLM3); read it first."),
    api_key: Optional[List[str]] = typer.Option(None, "--api-key", help="A key of the shop's own front end (repeatable; env ENDCLOUD_SERVE_API_KEYS, comma-separated). Set: chat needs a key or a customer token. Unset: chat is open, and anonymous. The customer token secret is read from ENDCLOUD_SERVE_CUSTOMER_SECRET only."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="A TOML config file (\\[serve], \\[end], \\[evolve], \\[cloud], \\[vllm], \\[privacy] tables; env ENDCLOUD_CONFIG; default <workspace>/endcloud.toml when it exists). Flags and variables override it."),
    show_config: bool = typer.Option(False, "--show-config", help="Print every setting in force and its source (flag, env, file, default), then exit."),
) -> None:
    """Serve the shop's OpenAI-compatible chat API: the end model answers, the cloud takes over."""
    if ctx.invoked_subcommand is not None:
        return
    from endcloud.cli.config import root_config, sections, settings_in_force
    from endcloud.compose import build_app_from_workspace
    from endcloud.configfile import apply_to_environ, render
    from endcloud.end.device import apply_flags

    typed = getattr(ctx.get_parameter_source("admin_token"), "name", "") == "COMMANDLINE"  # else it came from a variable
    flags = {("serve", "host"): host, ("serve", "port"): port, ("serve", "engine"): engine, ("serve", "min_match"): min_match,
             ("serve", "admin_token"): admin_token if typed else None, ("serve", "api_keys"): tuple(api_key) if api_key else None,
             ("end", "device"): device, ("end", "dtype"): dtype, ("end", "trust_remote_code"): trust_remote_code or None}
    path, tables, resolved = settings_in_force(config=config or root_config(), workspace=workspace, flags=flags)
    if show_config:
        typer.echo(render(resolved, path=path))
        return
    apply_to_environ(sections(), tables)  # the file sits under the environment; every room reads its variables as before
    apply_flags(device, dtype, trust_remote_code)  # the engine (and its worker process) reads them
    overrides = {"host": host, "port": port, "engine": engine, "min_match": min_match, "admin_token": admin_token,
                 "api_keys": tuple(api_key) if api_key else None}
    app = build_app_from_workspace(workspace, base=base, adapter=adapter, shop=shop, cloud=cloud,
                                   evolve_interval_s=evolve_interval if evolve else None, **overrides)
    if evolve:
        from endcloud.cli.config import evolve_settings

        app.state.evolve_settings = evolve_settings(resolved)[0]  # the [evolve] table, for the loop beside the server
    s = app.state.settings
    typer.echo(f"endcloud serve: base {s.base_dir}, adapter {s.adapter_name or 'none'}, shop {s.shop_dir or 'none'}, "
               f"cloud {getattr(app.state.teacher, 'name', 'none')}, db {s.db_path}")
    typer.echo(f"  chat: {'API key or customer token required' if s.api_keys else 'open to anyone, anonymous'}"
               f"{', customer tokens checked' if s.customer_secret else ' (no customer_secret: every chat anonymous)'}; "
               f"admin routes: {'admin token required' if s.admin_token else 'loopback clients only'}")
    typer.echo(f"  settings: {path or 'no config file'}; `--show-config` prints each one and its source")
    typer.echo(f"  loading the end model... then listening on http://{s.host}:{s.port}/v1  (model: endcloud | end | cloud)")
    import uvicorn

    uvicorn.run(app, host=s.host, port=s.port, log_level=log_level, timeout_graceful_shutdown=s.shutdown_timeout_s)


@serve_app.command("token")
def token(
    customer: str = typer.Option(..., "--customer", help="The customer id the token proves (as the shop's orders name them)."),
    ttl: int = typer.Option(3600, "--ttl", help="Seconds until the token expires."),
    secret: Optional[str] = typer.Option(None, "--secret", envvar="ENDCLOUD_SERVE_CUSTOMER_SECRET", show_envvar=True, show_default=False, help="The server's customer_secret (prefer the variable: a flag shows in `ps`)."),
) -> None:
    """Print a signed customer token (what the shop's site signs for a logged-in customer; format in docs/architecture.md)."""
    from endcloud.errors import ConfigError
    from endcloud.serve.auth import TokenError, sign_customer_token

    if not secret:
        raise ConfigError("no customer secret: set ENDCLOUD_SERVE_CUSTOMER_SECRET (the server's customer_secret)")
    try:
        typer.echo(sign_customer_token(secret, customer, ttl))
    except TokenError as e:
        raise ConfigError(f"--customer/--ttl: {e}") from None


def register(app: typer.Typer) -> None:
    """Add this room's commands to the root `endcloud` app."""
    app.add_typer(serve_app, name="serve")
