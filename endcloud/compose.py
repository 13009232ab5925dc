"""The composition root: a shop's server and its online loop, built from a workspace.

`endcloud serve`, `endcloud demo` and tests call this; nothing below it knows the others
exist (`serve` knows nothing of the loop, `evolve` nothing of HTTP, `runtime` of neither).

    app = build_app_from_workspace("endcloud-work")             # base/, active adapter, shop/, endcloud.db
    app = build_app_from_workspace(ws, adapter="shop/v2", cloud="reference", evolve_interval_s=60)
    ev = evolver_for_app(app, ws, settings=EvolveSettings(...), background=False)   # promotions hot-swap

What is served, and where it comes from:
    base     --base, else <workspace>/base (Workspace.find_base)
    adapter  --adapter NAME | NAME/vN | a folder; default: the active version of the
             workspace's adapter (Workspace.find_adapter)
    shop     --shop, else <workspace>/shop when it holds a pack
    cloud    `cloud.default_teacher`: --cloud, else the OpenAI-compatible teacher when
             ENDCLOUD_CLOUD_BASE_URL is set (always behind the privacy gate), else the offline
             reference teacher answering from the shop pack, else none (the end model answers
             every turn; decisions still logged)
    matcher  the workspace's trained matcher, else the "lexical" MATCHING scorer
    glue     the novelty check's (`serve.grounding.serving_glue`): base/glue.json, plus what the
             newest `GLUE_LABELS` teacher labels teach (the online loop's labels trained in a
             round, then labels/labels.jsonl), learned when the server starts
    engine   ServeSettings.engine (--engine or ENDCLOUD_SERVE_ENGINE, read there only); base/ is
             needed for every engine but vLLM, whose server loaded its own base
Nothing built yet -> a ConfigError naming the command to run (never a traceback).

Promotions: the server follows `adapters/<name>/active` (`end.adapters.ActiveWatcher`), so
a separate `endcloud evolve` process's promotions are served without a restart; with
`evolve_interval_s` the loop runs beside the server and hot-swaps its engine directly.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Sequence

from endcloud.config import DEFAULT_ADAPTER, Workspace
from endcloud.errors import ConfigError
from endcloud.runtime.engines import needs_local_base
from endcloud.serve.settings import ServeSettings

log = logging.getLogger("endcloud.serve")

# Teacher labels read for the novelty check's glue when a server starts: enough for a shop's
# habitual phrasing, few enough to learn in a second or two.
GLUE_LABELS = 2000


def build_app_from_workspace(workspace: str | os.PathLike[str] | Workspace | None = None, *, base=None, adapter=None,
                             shop=None, cloud: str | None = None, teacher: Any = None, review: bool = True,
                             extra_routers: Sequence[Any] = (), watch_s: float = 5.0, canary_s: float = 2.0,
                             evolve_interval_s: float | None = None, **settings: Any):
    """The FastAPI app serving a workspace (see the module docstring). Extra keywords are
    `ServeSettings` fields (host, port, engine, min_match, ...); None values are ignored.
    Raises ConfigError when nothing is built.

    `review`: mount the review page and dashboard. Unless `--adapter` pins a version, the
    server follows the adapter's `active` pointer (polled every `watch_s` s; 0 turns it
    off). `canary_s`: how often a running canary or A/B test of that adapter is judged
    (`endcloud.serve.canary`; 0 turns experiments off). `evolve_interval_s`: run the online
    loop beside the server, a step that often."""
    from endcloud.cloud import default_teacher
    from endcloud.serve.app import create_app

    ws = workspace if isinstance(workspace, Workspace) else Workspace.resolve(workspace)
    s = ServeSettings.from_env(**settings)
    # a vLLM server holds its own base weights: the workspace's base/ is needed only for local engines
    base_dir = ws.find_base(base) if needs_local_base(s.engine) or base is not None else None
    adapter_dir, adapter_label = ws.find_adapter(adapter)
    shop_dir = Path(shop).expanduser() if shop is not None else (ws.shop if ws.has_shop() else None)
    if shop_dir is not None and not shop_dir.is_dir():
        raise ConfigError(f"--shop {str(shop_dir)!r} is not a folder; pass a shop pack (see `endcloud shop --help`)")
    if shop_dir is not None:
        from endcloud.kb import ShopPack
        from endcloud.privacy import use_public_values

        use_public_values(p.sku for p in ShopPack.load(shop_dir).products)  # SKUs are not personal data
    if teacher is None:
        teacher = default_teacher(shop=shop_dir, workspace=ws, name=cloud)
    scorer = None
    try:
        from endcloud.scoring.matching import load_matching

        scorer = load_matching("auto", workspace=ws)
    except Exception as e:  # a broken matcher folder must not stop the shop from serving
        log.warning("matcher unavailable (%s); using the lexical matcher", e)
    found = dict(base_dir=base_dir, adapter_dir=adapter_dir, adapter_name=adapter_label, shop_dir=shop_dir, db_path=ws.db,
                 audit_path=ws.audit)
    s = s.with_(**{k: v for k, v in found.items() if v is not None})  # what was not found leaves the env's value
    routers = list(extra_routers)
    if review:
        from endcloud.serve.review import review_router

        routers.insert(0, review_router(db_path=ws.db, adapters_root=ws.adapters, admin_token=s.admin_token,
                                        calibration_path=ws.reports / "route-calibration.json"))
        from endcloud.serve.canary import canary_router

        routers.insert(1, canary_router(admin_token=s.admin_token))
    from endcloud.end.reader import GLUE_NAME

    # the labels only refine a base's glue, and are read with the shop's knowledge: neither, no labels
    checked = s.novelty_check and s.shop_dir is not None and s.base_dir is not None and (s.base_dir / GLUE_NAME).is_file()
    labels = glue_labels(ws) if checked else []
    app = create_app(s, teacher=teacher, scorer=scorer, extra_routers=routers, glue_labels=labels)
    follow = watch_name(adapter, adapter_label)
    if follow is not None and watch_s > 0:
        app.state.startup_hooks.append(lambda app: _watch(app, ws, follow, watch_s))
    if follow is not None and canary_s > 0:
        app.state.startup_hooks.append(lambda app: _canary(app, ws, follow, canary_s))
    if evolve_interval_s is not None:
        app.state.startup_hooks.append(lambda app: _evolve_beside(app, ws, evolve_interval_s))
    return app


def glue_labels(ws: Workspace, limit: int = GLUE_LABELS) -> list[tuple[list[dict[str, str]], str]]:
    """The newest `limit` teacher labels of the workspace as (turns ending with the question,
    label): the online loop's labels a round trained on (`store.labels`), then the last lines
    of labels/labels.jsonl. What cannot be read is skipped: the glue is a refinement."""
    out: list[tuple[list[dict[str, str]], str]] = []
    if ws.db.exists():
        try:
            from endcloud.store.labels import LabelStore

            store = LabelStore(ws.db)
            try:
                out += [(lb.messages(), lb.label) for lb in store.list("used", newest=limit)]
            finally:
                store.conn.close()
        except Exception as e:
            log.warning("novelty glue: the online loop's labels unreadable (%s)", e)
    if len(out) < limit and ws.labels.exists():
        from collections import deque

        from endcloud.end.data import Example
        from endcloud.fileio import read_jsonl
        from endcloud.records import Label

        try:
            for d in deque(read_jsonl(ws.labels), maxlen=limit - len(out)):
                try:
                    ex = Example.from_label(Label.from_json(d))  # the messages training builds from it
                except (KeyError, TypeError, AttributeError):  # not a label line: skipped
                    continue
                out.append((ex.messages, ex.response))
        except Exception as e:
            log.warning("novelty glue: %s unreadable (%s)", ws.labels, e)
    return out


def evolver_for_app(app: Any, workspace: Any = None, *, settings: Any = None, background: bool = True, **kw: Any):
    """The online loop of `workspace`, wired to `app`: its cloud, its α and Θ, and promotions
    that hot-swap the app's engine (`evolve.service.evolver_for_workspace` keywords pass on)."""
    from endcloud.evolve import EvolveSettings
    from endcloud.evolve.service import evolver_for_workspace

    s = app.state.settings
    if settings is None:
        settings = EvolveSettings(alpha=s.alpha, theta=s.theta)
    # the engine is built by the app's lifespan: look it up when a promotion happens
    return evolver_for_workspace(workspace, teacher=app.state.teacher, settings=settings, background=background,
                                 on_promote=lambda path: app.state.engine.swap_adapter(path), **kw)


def watch_name(adapter: Any, label: str | None) -> str | None:
    """The adapter name whose `active` pointer the server follows: the served one unless
    --adapter pinned a version or a folder; the default name when nothing is published yet."""
    if adapter is None:
        return label.split("/")[0] if label else DEFAULT_ADAPTER
    text = str(adapter)
    if "/" in text or (Path(text).expanduser() / "adapter_config.json").exists():
        return None  # pinned
    return text


def _watch(app, ws: Workspace, name: str, interval_s: float):
    """Start following promotions made by a separate `endcloud evolve` process; return its stop."""
    try:
        from endcloud.end.adapters import ActiveWatcher

        watcher = ActiveWatcher(ws.adapter_registry(), name, app.state.engine.swap_adapter, interval_s=interval_s).start()
    except Exception as e:  # following promotions is a convenience; serving goes on without it
        log.warning("not following adapter promotions of %r: %s", name, e)
        return None
    log.info("following promotions of adapter %r every %.0f s", name, interval_s)
    return watcher.stop


def _canary(app, ws: Workspace, name: str, interval_s: float):
    """Run the adapter's canary / A/B experiments on this server (`serve.canary`); returns its stop."""
    try:
        from endcloud.serve.canary import CanaryController

        ctl = CanaryController(registry=ws.adapter_registry(), name=name, db_path=ws.db, engine=app.state.engine,
                               interval_s=interval_s).start()
    except Exception as e:  # an experiment is a convenience; the champion serves without it
        log.warning("no canary / A/B experiments for adapter %r: %s", name, e)
        return None
    app.state.canary = app.state.service.canary = ctl
    return ctl.stop


def _evolve_beside(app, ws: Workspace, interval_s: float):
    """The online loop beside the server (rounds train in a background process); returns its stop."""
    from endcloud.evolve.service import EvolutionService

    # app.state.evolve_settings: the [evolve] table the CLI resolved (`endcloud serve --evolve`), else α and Θ of serve
    settings = getattr(app.state, "evolve_settings", None)
    return EvolutionService(evolver_for_app(app, ws, settings=settings, background=True), interval_s=interval_s).start().stop
