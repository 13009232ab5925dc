"""The review page (`/review`) and the dashboard (`/dashboard`): the human track.

The review queue holds low-scored, disliked and quarantined turns (the online loop puts
them there). A person approves the cloud's reply, edits it, or rejects the item; the
verdict is stored with who and when, and the next evolve step turns it into a label that
outranks every automatic one. The dashboard draws what a shop owner asks: are the scores
rising, is the cloud taking over less, what does the cloud cost, which adapter versions
passed the gate. Pages are static HTML + a little JS (no build step); plots are PNGs
rendered here with matplotlib.

    router = review_router(db_path=ws.db, adapters_root=ws.adapters)
    app = create_app(..., extra_routers=[router])
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import time
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, Field

from endcloud.errors import DataError
from endcloud.serve.auth import require_admin
from endcloud.serve.http import ApiError
from endcloud.store.db import connect

PLOTS = ("scores", "takeover", "cost", "adapters")


class VerdictRequest(BaseModel):
    verdict: str = Field(description="approve | edit | reject")
    reviewer: str = Field(min_length=1, max_length=80)
    corrected_text: str | None = Field(default=None, max_length=4000)
    note: str | None = Field(default=None, max_length=1000)


def _page(name: str) -> str:
    return resources.files("endcloud.serve").joinpath("static", name).read_text(encoding="utf-8")


def review_router(*, db_path: str | os.PathLike[str], adapters_root: str | os.PathLike[str] | None = None,
                  admin_token: str | None = None, calibration_path: str | os.PathLike[str] | None = None) -> APIRouter:
    """Routes for /review, /dashboard and their JSON/PNG endpoints, on the workspace database.
    `calibration_path`: the cost dial's last curve (`endcloud route calibrate` writes it), shown
    on the dashboard beside the share of turns the cloud takes now."""
    from endcloud.store.labels import LabelStore
    from endcloud.store.review import ReviewStore

    router = APIRouter()
    reviews = ReviewStore(db_path)
    labels = LabelStore(reviews.conn)

    def _auth(request: Request) -> None:
        # the server's one admin check: the token (header, or the cookie `?token=` sets), else loopback only
        try:
            require_admin(request, admin_token)
        except ApiError as e:
            raise HTTPException(e.status, e.message, headers=e.headers or None) from None

    @router.get("/review", response_class=HTMLResponse, include_in_schema=False)
    async def review_page(request: Request):
        _auth(request)
        return HTMLResponse(_page("review.html"))

    @router.get("/dashboard", response_class=HTMLResponse, include_in_schema=False)
    async def dashboard_page(request: Request):
        _auth(request)
        return HTMLResponse(_page("dashboard.html"))

    @router.get("/api/review/items")
    async def items(request: Request, status: str = "pending", limit: int = 200):
        _auth(request)
        st = None if status == "all" else status
        rows = await asyncio.to_thread(reviews.items, st, min(max(limit, 1), 1000))
        shown = await asyncio.to_thread(lambda: [_item_json(r) for r in rows])  # redaction is CPU work
        return {"items": shown, "counts": await asyncio.to_thread(_status_counts, reviews)}

    @router.get("/api/review/items/{item_id}/reveal")
    async def reveal(item_id: str, placeholder: str, request: Request):
        # The page shows customers' text redacted; an admin may look at one value at a time.
        from endcloud.store.review import revealed_value

        _auth(request)
        try:
            item = await asyncio.to_thread(reviews.get, item_id)
        except DataError as e:
            raise HTTPException(404, str(e)) from None
        value = await asyncio.to_thread(revealed_value, item, placeholder)
        if value is None:
            raise HTTPException(404, f"item {item_id!r} shows no placeholder {placeholder!r}")
        return {"item": item_id, "placeholder": placeholder, "value": value}

    @router.post("/api/review/items/{item_id}/verdict")
    async def verdict(item_id: str, body: VerdictRequest, request: Request):
        _auth(request)
        try:
            vid = await asyncio.to_thread(reviews.verdict, item_id, body.verdict, reviewer=body.reviewer,
                                          corrected_text=body.corrected_text, note=body.note)
        except DataError as e:
            raise HTTPException(404 if "no review item" in str(e) or "unknown" in str(e) else 400, str(e)) from None
        return {"id": vid, "item": _item_json(await asyncio.to_thread(reviews.get, item_id))}

    @router.get("/api/dashboard")
    async def dashboard_data(request: Request):
        _auth(request)
        data = await asyncio.to_thread(_dashboard, db_path, adapters_root, labels)
        data["calibration"] = await asyncio.to_thread(_calibration, calibration_path)
        return JSONResponse(data)

    @router.get("/dashboard/plot/{kind}.png", include_in_schema=False)
    async def plot(kind: str, request: Request):
        _auth(request)
        if kind not in PLOTS:
            raise HTTPException(404, f"no plot {kind!r}; plots: {', '.join(PLOTS)}")
        data = await asyncio.to_thread(_dashboard, db_path, adapters_root, labels)
        png = await asyncio.to_thread(_render, kind, data)
        return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})

    return router


def _item_json(item: Any) -> dict[str, Any]:
    """An item as the page shows it: customers' personal data as placeholders (see /reveal)."""
    from endcloud.store.review import redacted_row

    return redacted_row(dict(item.__dict__), "items")


def _status_counts(reviews: Any) -> dict[str, int]:
    rows = reviews.conn.execute("SELECT status, COUNT(*) FROM review_items GROUP BY status").fetchall()
    return {r[0]: int(r[1]) for r in rows}


def _calibration(path: Any) -> dict[str, Any] | None:
    """The cost dial's last calibration (curve, chosen and in-force points), or None: none was
    run, or its file is unreadable (the dashboard must not fail over a report)."""
    if not path:
        return None
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("curve"), list):
        return None
    try:
        data["calibrated_at"] = Path(path).stat().st_mtime
    except OSError:
        pass
    return data


def _dashboard(db_path: Any, adapters_root: Any, labels: Any) -> dict[str, Any]:
    """Time series of served turns (final score, who answered, cloud cost) and adapter versions."""
    conn = connect(db_path)
    try:
        has = conn.execute("SELECT name FROM sqlite_master WHERE type='table' AND name='replies'").fetchone()
        rows = conn.execute("SELECT created_at, answered_by, scores, cloud_cost, adapter FROM replies ORDER BY created_at").fetchall() \
            if has else []
    finally:
        conn.close()
    turns = []
    for r in rows:
        s = json.loads(r["scores"] or "{}")
        turns.append({"t": r["created_at"], "by": r["answered_by"], "final": s.get("final"), "match": s.get("match"),
                      "cost": r["cloud_cost"] or 0.0, "adapter": r["adapter"],
                      # the end reply's facts nothing in the turn supported (None: grounded, or not checked)
                      "ungrounded": s.get("unsupported") if s.get("grounded") is False else None,
                      # its novel text (`scoring.novelty`; None: none, or not checked)
                      "novel": s.get("novel") or None,
                      "intent": s.get("intent"), "sentiment": s.get("sentiment")})  # endcloud.tasks.classify
    versions = []
    if adapters_root and Path(adapters_root).is_dir():
        from endcloud.end.adapters import AdapterRegistry

        reg = AdapterRegistry(adapters_root)
        for row in reg.list():
            gate = (reg.manifest(row["name"], row["version"]) or {}).get("gate") or {}
            versions.append({"name": row["name"], "version": row["version"], "status": row.get("status"),
                             "parent": row.get("parent"), "method": row.get("method"),
                             "created_at": row.get("created_at"),
                             "candidate_final": (gate.get("candidate") or {}).get("final"),
                             "champion_final": (gate.get("champion") or {}).get("final"),
                             "promote": gate.get("promote"), "reasons": gate.get("reasons")})
    n = len(turns)
    takeovers = sum(t["by"] == "cloud" for t in turns)
    finals = [t["final"] for t in turns if t["final"] is not None]
    ungrounded = [{"t": t["t"], "by": t["by"], "facts": t["ungrounded"]} for t in turns if t["ungrounded"] is not None]
    novel = [{"t": t["t"], "by": t["by"], "runs": t["novel"]} for t in turns if t["novel"] is not None]
    return {"generated_at": time.time(), "turns": turns, "versions": versions,
            "labels": labels.counts(), "rounds": labels.rounds(), "grounding_failures": ungrounded[-20:][::-1],
            "novelty_failures": novel[-20:][::-1],
            "summary": {"turns": n, "takeover_rate": takeovers / n if n else None,
                        "mean_final": sum(finals) / len(finals) if finals else None,
                        "cloud_cost": sum(t["cost"] for t in turns), "grounding_failures": len(ungrounded),
                        "novelty_failures": len(novel),
                        "intents": _counts(t["intent"] for t in turns), "sentiments": _counts(t["sentiment"] for t in turns)}}


def _counts(values: Any) -> dict[str, int]:
    """{value: turns}, most frequent first (turns recorded before the analysis existed are left out)."""
    out: dict[str, int] = {}
    for v in values:
        if v:
            out[v] = out.get(v, 0) + 1
    return dict(sorted(out.items(), key=lambda kv: (-kv[1], kv[0])))


def _rolling(xs: list[float], k: int) -> list[float]:
    out, acc = [], 0.0
    for i, x in enumerate(xs):
        acc += x
        if i >= k:
            acc -= xs[i - k]
        out.append(acc / min(i + 1, k))
    return out


def _render(kind: str, data: dict[str, Any]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.0), dpi=100)
    turns = data["turns"]
    k = max(5, len(turns) // 20)
    if kind == "scores":
        pts = [(i, t["final"]) for i, t in enumerate(turns) if t["final"] is not None]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], ".", alpha=0.3, label="Final per turn")
            ax.plot([p[0] for p in pts], _rolling([p[1] for p in pts], k), "-", label=f"rolling mean ({k})")
        ax.set_ylim(0, 1)
        ax.set_ylabel("Final score (eq. 1)")
        ax.set_xlabel("turn")
    elif kind == "takeover":
        flags = [1.0 if t["by"] == "cloud" else 0.0 for t in turns]
        if flags:
            ax.plot(range(len(flags)), _rolling(flags, k), "-", color="tab:red", label=f"cloud share (rolling {k})")
        ax.set_ylim(0, 1)
        ax.set_ylabel("takeover rate")
        ax.set_xlabel("turn")
    elif kind == "cost":
        total, ys = 0.0, []
        for t in turns:
            total += t["cost"]
            ys.append(total)
        if ys:
            ax.plot(range(len(ys)), ys, "-", color="tab:green", label="cumulative cloud cost")
        ax.set_ylabel("cost")
        ax.set_xlabel("turn")
    else:
        vs = data["versions"]
        xs = [f"{v['name']}/{v['version']}" for v in vs]
        ax.bar(range(len(vs)), [v["candidate_final"] or 0 for v in vs],
               color=["tab:green" if v["promote"] else ("tab:gray" if v["promote"] is None else "tab:red") for v in vs],
               label="candidate Final (green: promoted, red: rejected)")
        ax.plot(range(len(vs)), [v["champion_final"] or 0 for v in vs], "k_", markersize=20, label="champion Final")
        ax.set_xticks(range(len(vs)), xs, rotation=30, ha="right", fontsize=7)
        ax.set_ylim(0, 1)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best", fontsize=7)
    else:
        ax.text(0.5, 0.5, "no data yet", ha="center", va="center", transform=ax.transAxes, color="gray")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()
