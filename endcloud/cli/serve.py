"""CLI commands of the `serve` room: `endcloud serve` (registered on the root app by `register`).

    endcloud serve                          # the workspace `endcloud demo` built, on 127.0.0.1:8000
    endcloud serve --base models/qwen --shop shops/towels --port 9000

With nothing built it says which command to run and exits 2 (never a traceback).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def serve(
    workspace: Optional[Path] = typer.Option(None, "--workspace", "-w", help="Workspace folder (default $ENDCLOUD_HOME or ./endcloud-work)."),
    base: Optional[Path] = typer.Option(None, "--base", help="Local Hugging Face model folder of the end model (default: the workspace's base/)."),
    adapter: Optional[str] = typer.Option(None, "--adapter", help="Adapter to serve: NAME, NAME/vN or a folder (default: the active one)."),
    shop: Optional[Path] = typer.Option(None, "--shop", help="Shop pack folder for knowledge snippets (default: the workspace's shop/)."),
    cloud: Optional[str] = typer.Option(None, "--cloud", help="Takeover teacher: openai, reference or none (default: openai when ENDCLOUD_CLOUD_BASE_URL is set, else reference)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on."),
    port: int = typer.Option(8000, "--port", help="TCP port to listen on."),
    min_match: Optional[float] = typer.Option(None, "--min-match", help="Matching score below which the cloud takes over."),
    log_level: str = typer.Option("info", "--log-level", help="uvicorn log level."),
    engine: Optional[str] = typer.Option(None, "--engine", help="End-model engine: transformers (in-process; the default), vllm (a vLLM server in the shop, named by ENDCLOUD_VLLM_BASE_URL / ENDCLOUD_VLLM_MODEL; see docs/scale.md) or llamacpp (GGUF via llama.cpp; the optional extra: pip install endcloud\\[llamacpp]). Default: $ENDCLOUD_SERVE_ENGINE, else transformers."),
    evolve: bool = typer.Option(False, "--evolve/--no-evolve", help="Run the online evolution loop beside the server (rounds train in a background process; promotions hot-swap)."),
    evolve_interval: float = typer.Option(60.0, "--evolve-interval", help="Seconds between evolution steps with --evolve."),
    admin_token: Optional[str] = typer.Option(None, "--admin-token", envvar="ENDCLOUD_ADMIN_TOKEN", help="Token the review page, dashboard and profile endpoints require (Bearer or ?token=)."),
) -> None:
    """Serve the shop's OpenAI-compatible chat API: the end model answers, the cloud takes over."""
    from endcloud.compose import build_app_from_workspace

    overrides = {"host": host, "port": port, "engine": engine, "min_match": min_match, "admin_token": admin_token}
    app = build_app_from_workspace(workspace, base=base, adapter=adapter, shop=shop, cloud=cloud,
                                   evolve_interval_s=evolve_interval if evolve else None, **overrides)
    s = app.state.settings
    typer.echo(f"endcloud serve: base {s.base_dir}, adapter {s.adapter_name or 'none'}, shop {s.shop_dir or 'none'}, "
               f"cloud {getattr(app.state.teacher, 'name', 'none')}, db {s.db_path}")
    typer.echo(f"  loading the end model... then listening on http://{host}:{port}/v1  (model: endcloud | end | cloud)")
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level=log_level)


def register(app: typer.Typer) -> None:
    """Add this room's commands to the root `endcloud` app."""
    app.command("serve")(serve)
