"""Building the server from a workspace: what `endcloud serve`, `endcloud demo` and the
evolution loop call in-process.

    app = build_app_from_workspace("endcloud-work")            # base/, active adapter, shop/, endcloud.db
    app = build_app_from_workspace(ws, adapter="shop/v2", cloud="reference")

What is served, and where it comes from:
    base     --base, else <workspace>/base (config.json there)
    adapter  --adapter NAME | NAME/vN | a folder; default: the active version of the
             workspace's adapter (the only name, or "shop" when there are several)
    shop     --shop, else <workspace>/shop when it holds a pack
    cloud    ENDCLOUD_CLOUD_BASE_URL set -> the OpenAI-compatible teacher (always behind the
             privacy gate); else the offline reference teacher answering from the shop pack;
             neither -> no cloud (the end model answers every turn; decisions still logged)
    matcher  the workspace's trained matcher, else character TF-IDF
Nothing built yet -> a ConfigError naming the command to run (never a traceback).
Promotions: the server follows `adapters/<name>/active` (see `watch_name`) and hot-swaps.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from endcloud.config import Workspace
from endcloud.errors import ConfigError
from endcloud.serve.settings import ServeSettings

log = logging.getLogger("endcloud.serve")

NOTHING_BUILT = (
    "nothing to serve in {root}: no end model found (looked for {base}). Build the embedded default first with "
    "`scripts/demo` (or `endcloud demo --workspace {root}`), or pass --base PATH to a local Hugging Face model folder"
)
DEFAULT_ADAPTER_NAME = "shop"


def find_base(ws: Workspace, base: str | os.PathLike[str] | None = None) -> Path:
    if base is not None:
        p = Path(base).expanduser()
        if not (p / "config.json").exists():
            raise ConfigError(f"--base {str(p)!r} is not a Hugging Face model folder (no config.json there)")
        return p
    if (ws.base / "config.json").exists():
        return ws.base
    raise ConfigError(NOTHING_BUILT.format(root=ws.root, base=ws.base))


def find_adapter(ws: Workspace, adapter: str | os.PathLike[str] | None) -> tuple[Path | None, str | None]:
    """(adapter dir, label) for --adapter, or the workspace's active adapter, or (None, None)."""
    if adapter is not None:
        p = Path(adapter).expanduser()
        if (p / "adapter_config.json").exists():
            return p, str(p)
    from endcloud.end.adapters import AdapterRegistry

    reg = AdapterRegistry(ws.adapters)
    names = reg.names() if ws.adapters.is_dir() else []
    if adapter is None:
        if not names:
            return None, None
        name = names[0] if len(names) == 1 else (DEFAULT_ADAPTER_NAME if DEFAULT_ADAPTER_NAME in names else names[0])
        path = reg.active(name)
        return (path, f"{name}/{path.name}") if path else (None, None)
    name, _, version = str(adapter).partition("/")
    if name not in names:
        raise ConfigError(f"--adapter {str(adapter)!r}: no adapter named {name!r} in {ws.adapters} "
                          f"(found: {', '.join(names) or 'none'}); pass NAME, NAME/vN or an adapter folder")
    path = reg.path(name, version) if version else reg.active(name)
    if path is None or not (path / "adapter_config.json").exists():
        raise ConfigError(f"--adapter {str(adapter)!r}: {'version ' + version if version else 'no active version'} "
                          f"is not usable; see `endcloud adapters list`")
    return path, f"{name}/{path.name}"


def make_cloud(ws: Workspace, shop_dir: Path | None, cloud: str | None = None) -> Any:
    """The takeover teacher: `cloud` by name, else openai when ENDCLOUD_CLOUD_BASE_URL is set, else reference."""
    from endcloud.cloud import make_teacher

    name = cloud or ("openai" if os.environ.get("ENDCLOUD_CLOUD_BASE_URL") else "reference" if shop_dir else "none")
    if name == "none":
        log.warning("no cloud configured: the end model answers every turn (set ENDCLOUD_CLOUD_BASE_URL or --shop)")
        return None
    return make_teacher(name, shop=shop_dir, workspace=ws)


def build_app_from_workspace(workspace: str | os.PathLike[str] | Workspace | None = None, *, base=None, adapter=None,
                             shop=None, cloud: str | None = None, teacher: Any = None, extra_routers=(),
                             watch_s: float = 5.0, **settings: Any):
    """The FastAPI app serving a workspace (see the module docstring). Extra keywords are
    `ServeSettings` fields (host, port, min_match, ...). Raises ConfigError when nothing is built.

    Unless `--adapter` pins a version, the server follows the adapter's `active` pointer
    (polled every `watch_s` s; 0 turns it off), so promotions made by a separate
    `endcloud evolve` process are served without a restart."""
    from endcloud.serve.app import create_app

    ws = workspace if isinstance(workspace, Workspace) else Workspace.resolve(workspace)
    engine = settings.get("engine") or os.environ.get("ENDCLOUD_SERVE_ENGINE", "transformers")
    # a vLLM server holds its own base weights: the workspace's base/ is needed only in-process
    base_dir = find_base(ws, base) if engine == "transformers" or base is not None else None
    adapter_dir, adapter_label = find_adapter(ws, adapter)
    shop_dir = Path(shop).expanduser() if shop is not None else (ws.shop if (ws.shop / "shop.yaml").exists() else None)
    if shop_dir is not None and not shop_dir.is_dir():
        raise ConfigError(f"--shop {str(shop_dir)!r} is not a folder; pass a shop pack (see `endcloud shop --help`)")
    if shop_dir is not None:
        from endcloud.kb import ShopPack
        from endcloud.privacy import use_public_values

        use_public_values(p.sku for p in ShopPack.load(shop_dir).products)  # SKUs are not personal data
    if teacher is None:
        teacher = make_cloud(ws, shop_dir, cloud)
    scorer = None
    try:
        from endcloud.scoring.matching import load_matching

        scorer = load_matching("auto", workspace=ws)
    except Exception as e:  # a broken matcher folder must not stop the shop from serving
        log.warning("matcher unavailable (%s); using the lexical matcher", e)
    s = ServeSettings.from_env(base_dir=base_dir, adapter_dir=adapter_dir, adapter_name=adapter_label, shop_dir=shop_dir,
                               db_path=ws.db, audit_path=ws.audit, **settings)
    app = create_app(s, teacher=teacher, scorer=scorer, extra_routers=extra_routers)
    follow = watch_name(ws, adapter, adapter_label)
    if follow is not None and watch_s > 0:
        app.state.startup_hooks.append(lambda app: _watch(app, ws, follow, watch_s))
    return app


def watch_name(ws: Workspace, adapter: Any, label: str | None) -> str | None:
    """The adapter name whose `active` pointer the server follows: the served one unless
    --adapter pinned a version or a folder; the default name when nothing is published yet."""
    if adapter is None:
        return label.split("/")[0] if label else DEFAULT_ADAPTER_NAME
    text = str(adapter)
    if "/" in text or (Path(text).expanduser() / "adapter_config.json").exists():
        return None  # pinned
    return text


def _watch(app, ws: Workspace, name: str, interval_s: float):
    """Start following promotions made by a separate `endcloud evolve` process; return its stop."""
    try:
        from endcloud.end.adapters import AdapterRegistry
        from endcloud.evolve.service import ActiveWatcher

        engine = app.state.engine
        watcher = ActiveWatcher(AdapterRegistry(ws.adapters), name, engine.swap_adapter, interval_s=interval_s).start()
    except Exception as e:  # following promotions is a convenience; serving goes on without it
        log.warning("not following adapter promotions of %r: %s", name, e)
        return None
    log.info("following promotions of adapter %r every %.0f s", name, interval_s)
    return watcher.stop
