"""Benchmark answer quality on held-out shops: right facts, end-model share, honest "don't know".

For each held-out pack (`bench/heldout/<pack>/`, see its README; never used to train or tune
anything) this starts a real `endcloud serve -w WORKSPACE --shop PACK` on 127.0.0.1, asks
every question in `questions.jsonl` through the official `openai` client, and judges the
replies with `bench/heldout/check.py`:

    .venv/bin/python bench/bench_quality.py --workspace endcloud-work
    .venv/bin/python bench/bench_quality.py --workspace endcloud-work --packs tea-shop-zh --limit 10 --out q.json
    .venv/bin/python bench/bench_quality.py --workspace endcloud-work --demo-shop   # also the workspace's own shop
    .venv/bin/python bench/bench_quality.py --workspace endcloud-work --onboard      # `endcloud shop onboard` each pack first
    .venv/bin/python bench/bench_quality.py --workspace W --api-key K --serve-arg=--some-auth-flag --serve-arg=K

A conversation's earlier turns are sent first (model "endcloud"), the server's replies kept
as the history; the last turn is the question. It is asked twice with that same history:
with model "endcloud" (the routed reply the customer gets) and with model "end" (the end
model forced: its own draft, in a session of its own). Each conversation has its own `user`
and session. A conversation that names one of the pack's order numbers is asked as the
customer who placed it, as a logged-in shopper would be: the bench registers the order in
that customer's profile (admin endpoint, loopback) and sends a customer token signed with
the server's customer secret (the server started here gets a random one; with --url pass
--customer-secret); a server that withholds other people's orders then still answers it.

Figures, per pack and over all held-out packs (--demo-shop is reported apart), with their targets:

    right fact            routed replies judged right (facts present; unanswerable: abstains)   >= 95 %
    answered by end       routed replies with endcloud.answered_by == "end"                    >= 70 %
    end drafts right      model="end" replies judged right                                     >= 85 %
    wrong end reached     routed replies answered by the end model and wrong (share of all)    <= 2 %
    unanswerable answered unanswerable questions whose routed reply makes a claim (count)      0

The server is always started on a throw-away database: by default on a *shadow* of the
workspace (a temp folder linking every entry of WORKSPACE but its endcloud.db and audit/),
so held-out questions never enter the workspace's conversation log and so never become the
online loop's lessons; the server (and onboarding) get a copy of the pack's own five files,
never its questions.jsonl. With --onboard, `endcloud shop onboard PACK -w TMP` builds a fresh
workspace per pack (from onboard's own shop reader when this install has one, else from
WORKSPACE's base/, unless --onboard-arg=--base --onboard-arg=DIR;
an adapter below onboard's quality bar fails the command and skips the pack, unless
--onboard-arg=--min-facts --onboard-arg=0); when that command does not exist the run says so
and uses the shadow workspace. --url points at a server already
running (one pack, its shop) instead of starting one.

Authentication: --api-key is the client's key (the `Authorization: Bearer` header). When
`endcloud serve --help` lists an --api-key option, the server started here gets the same
key (through ENDCLOUD_SERVE_API_KEYS where the help names it: a flag shows in `ps`); otherwise
pass whatever the server needs with --serve-arg / --serve-env.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
HELDOUT = ROOT / "bench" / "heldout"
sys.path.insert(0, str(ROOT))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TARGETS = {  # name: (comparison, target, unit)
    "right": (">=", 0.95, "share"),
    "end_share": (">=", 0.70, "share"),
    "end_drafts_right": (">=", 0.85, "share"),
    "wrong_end_reached": ("<=", 0.02, "share"),
    "unanswerable_answered": ("<=", 0, "count"),
}
LABELS = {
    "right": "right fact (routed reply)",
    "end_share": "answered by the end model",
    "end_drafts_right": "end model's own drafts right",
    "wrong_end_reached": "wrong end replies reaching customers",
    "unanswerable_answered": "unanswerable questions answered anyway",
}
DEMO = "demo-shop"  # the workspace's own (synthetic) shop: reported, never in the held-out overall
# A workspace's files the benchmark must never write: the conversation log and the audit log.
PRIVATE = {"endcloud.db", "endcloud.db-wal", "endcloud.db-shm", "endcloud.db-journal", "audit"}


def _load_check():
    spec = importlib.util.spec_from_file_location("heldout_check", HELDOUT / "check.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("heldout_check", mod)
    spec.loader.exec_module(mod)
    return mod


check = _load_check()


def endcloud_cmd() -> list[str]:
    exe = Path(sys.executable).with_name("endcloud")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "endcloud"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spread(items: list, n: int | None) -> list:
    """n items spread evenly over the list (every kind of question, not the first n)."""
    if n is None or n >= len(items):
        return list(items)
    return [items[i * len(items) // n] for i in range(n)]


# -- which packs -------------------------------------------------------------------------------------
@dataclass
class PackRun:
    name: str
    pack_dir: Path
    questions: list[Any]


def demo_questions(pack_dir: Path) -> list[Any]:
    """The synthetic shop's own eval set (chats/eval.jsonl: query, context, facts) as questions;
    rows without facts (greetings) are not judged and left out."""
    path = pack_dir / "chats" / "eval.jsonl"
    if not path.exists():
        raise SystemExit(f"--demo-shop: {path} not found; the workspace's shop/ has no eval set")
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        if not row.get("facts"):
            continue
        turns = [c if isinstance(c, str) else c.get("content", "") for c in row.get("context", [])
                 if isinstance(c, str) or c.get("role") == "user"]
        out.append(check.Question(id=row["id"], turns=[*turns, row["query"]], expect={"all": list(row["facts"])},
                                  tags=[row.get("intent", "")]))
    return out


def select_packs(args) -> list[PackRun]:
    names = [p.strip() for p in args.packs.split(",") if p.strip()] if args.packs else [p.name for p in check.packs(HELDOUT)]
    runs = []
    for name in names:
        d = Path(name) if Path(name).is_dir() else HELDOUT / name
        if not (d / "questions.jsonl").exists():
            valid = ", ".join(p.name for p in check.packs(HELDOUT))
            raise SystemExit(f"--packs: {name!r} is neither a held-out pack ({valid}) nor a folder with questions.jsonl")
        runs.append(PackRun(d.name, d, spread(check.load_questions(d / "questions.jsonl"), args.limit)))
    if args.demo_shop:
        shop = Path(args.workspace) / "shop"
        runs.append(PackRun(DEMO, shop, spread(demo_questions(shop), args.limit)))
    return runs


# -- workspaces and the server -----------------------------------------------------------------------
PACK_FILES = ("shop.yaml", "catalog.csv", "faq.jsonl", "policies.md", "orders.csv")


def pack_without_questions(pack_dir: Path, into: Path) -> Path:
    """A copy of the pack's own files only: what onboarding and the server see can never
    include the held-out questions (or anything else kept beside them)."""
    into.mkdir(parents=True, exist_ok=True)
    for name in PACK_FILES:
        if (pack_dir / name).exists():
            shutil.copy2(pack_dir / name, into / name)
    return into


def shadow_workspace(ws: Path, into: Path) -> Path:
    """A workspace that reads everything of `ws` but writes its own database and audit log."""
    into.mkdir(parents=True, exist_ok=True)
    for entry in ws.iterdir():
        if entry.name not in PRIVATE:
            (into / entry.name).symlink_to(entry.resolve(), target_is_directory=entry.is_dir())
    return into


def command_exists(*words: str) -> bool:
    r = subprocess.run([*endcloud_cmd(), *words, "--help"], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "COLUMNS": "200"})
    return r.returncode == 0


def serve_help() -> str:
    r = subprocess.run([*endcloud_cmd(), "serve", "--help"], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "COLUMNS": "200"})
    return r.stdout + r.stderr


def onboard_base(ws: Path, extra: list[str]) -> list[str]:
    """`--base ws/base` where onboarding would find no base of its own: no --base among the
    extra arguments and no shop reader in this install."""
    if any(a == "--base" or a.startswith("--base=") for a in extra):
        return []
    try:
        from endcloud.end.reader import reader_base

        if reader_base() is not None:
            return []
    except Exception:  # an install without the shop reader module: use the workspace's base
        pass
    return ["--base", str((ws / "base").resolve())] if (ws / "base").is_dir() else []


def onboard(pack_dir: Path, ws: Path, into: Path, extra: list[str], log) -> Path | None:
    """`endcloud shop onboard PACK -w into` (a new, empty workspace); None when it failed."""
    cmd = [*endcloud_cmd(), "shop", "onboard", str(pack_dir), "-w", str(into), "--no-progress",
           *onboard_base(ws, extra), *extra]
    log(f"  onboarding: {' '.join(cmd)}")
    t = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        log(f"  onboarding failed (exit {r.returncode}) after {time.perf_counter() - t:.0f} s:\n"
            + "\n".join("    " + ln for ln in (r.stdout + r.stderr).strip().splitlines()[-15:]))
        return None
    log(f"  onboarded in {time.perf_counter() - t:.0f} s")
    return into


class Server:
    """`endcloud serve` in its own process on 127.0.0.1; its output goes to a log file."""

    def __init__(self, ws: Path, pack_dir: Path, *, args, log_path: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [*endcloud_cmd(), "serve", "-w", str(ws), "--shop", str(pack_dir), "--host", "127.0.0.1",
               "--port", str(self.port), "--log-level", "warning"]
        if args.cloud:
            cmd += ["--cloud", args.cloud]
        key_env = {}
        if args.api_key and args.server_takes_key == "env":
            key_env = {"ENDCLOUD_SERVE_API_KEYS": args.api_key}  # not on the command line, where `ps` shows it
        elif args.api_key and args.server_takes_key == "flag":
            cmd += ["--api-key", args.api_key]
        cmd += args.serve_arg
        # One client speaks for many customers: the per-caller rate limit would throttle the
        # bench, not measure anything. The customer secret signs the order owners' tokens.
        env = {**os.environ, "ENDCLOUD_SERVE_RATE_LIMIT_PER_MINUTE": "1000000",
               "ENDCLOUD_SERVE_CUSTOMER_SECRET": args.customer_secret, **key_env,
               **dict(kv.split("=", 1) for kv in args.serve_env)}
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.cmd = [("***" if args.api_key and c == args.api_key else c) for c in cmd]  # what the report records
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=str(ROOT))

    def wait_ready(self, timeout: float) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with {self.proc.returncode} before it was ready:\n{self.tail()}")
            try:
                r = httpx.get(self.url + "/healthz", timeout=2)
                if r.status_code in (401, 403) or (r.status_code == 200 and r.json().get("status") == "ok"):
                    return
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.5)
        raise RuntimeError(f"the server was not ready after {timeout:.0f} s:\n{self.tail()}")

    def tail(self, lines: int = 25) -> str:
        self._log.flush()
        text = self.log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
        return "\n".join("    " + ln for ln in text[-lines:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()


# -- asking ----------------------------------------------------------------------------------------------
@dataclass
class Outcome:
    id: str
    turns: list[str]
    unanswerable: bool
    tags: list[str]
    reply: str = ""
    answered_by: str = ""
    decision: dict[str, Any] = field(default_factory=dict)
    scores: dict[str, Any] = field(default_factory=dict)
    cloud_failed: bool = False
    right: bool = False
    reason: str = ""
    end_reply: str = ""
    end_right: bool | None = None
    end_reason: str = ""
    history: list[dict[str, str]] = field(default_factory=list)
    error: str = ""
    seconds: float = 0.0


def _ask(client, model: str, messages: list[dict], user: str, session: str | None, args,
         headers: dict[str, str] | None = None) -> tuple[str, dict]:
    kw: dict[str, Any] = {"model": model, "messages": messages, "user": user}
    if session is not None:
        kw["extra_body"] = {"session_id": session}
    if headers:
        kw["extra_headers"] = headers
    if args.seed is not None:
        kw["seed"] = args.seed
    if args.temperature is not None:
        kw["temperature"] = args.temperature
    if args.max_tokens is not None:
        kw["max_tokens"] = args.max_tokens
    resp = client.chat.completions.create(**kw)
    return resp.choices[0].message.content or "", (resp.model_extra or {}).get("endcloud") or {}


class Owners:
    """Makes a conversation's asker the owner of the orders it names: the profile gets the
    orders (PUT /v1/customers/{id}/profile), the requests a signed customer token."""

    def __init__(self, url: str, pack: Any, args, log):
        self.url, self.args = url, args
        self.orders = {oid: row for oid, row in pack.orders.items()}
        self.sign = None
        try:
            from endcloud.serve.auth import CUSTOMER_HEADER, sign_customer_token

            self.sign, self.header = sign_customer_token, CUSTOMER_HEADER
        except ImportError:
            log("  this checkout signs no customer tokens: order questions are asked by `user` alone")

    def named(self, turns: list[str]) -> list[str]:
        text = " ".join(turns).lower()
        return [oid for oid in self.orders if oid.lower() in text]

    def become(self, customer: str, order_ids: list[str]) -> dict[str, str]:
        """Register the orders to `customer`; the headers its chat requests carry."""
        import httpx

        orders = []
        for oid in order_ids:
            row = self.orders[oid]
            orders.append({"order_id": oid, "item": row.get("sku", ""), "status": row.get("status", ""),
                           **{k: v for k, v in row.items() if k not in ("order_id", "sku", "status") and v}})
        admin = {"Authorization": f"Bearer {self.args.admin_token}"} if self.args.admin_token else {}
        r = httpx.put(f"{self.url}/v1/customers/{customer}/profile", json={"orders": orders}, headers=admin, timeout=30)
        if r.status_code != 200:
            raise RuntimeError(f"registering orders {order_ids} to {customer}: HTTP {r.status_code} {r.text[:200]}")
        if self.sign is None:
            return {}
        return {self.header: self.sign(self.args.customer_secret, customer, ttl_s=6 * 3600)}


def ask_conversation(client, q, facts, run_id: str, args, owners: Owners | None = None) -> Outcome:
    out = Outcome(id=q.id, turns=list(q.turns), unanswerable=q.unanswerable, tags=list(q.tags))
    user = f"bench-{run_id}-{q.id}"[:120]
    t = time.perf_counter()
    try:
        orders = owners.named(q.turns) if owners is not None else []
        headers = owners.become(user, orders) if orders else None
        # A named customer may name a new session; an anonymous caller may only continue one
        # the server issued (so the first turn goes without and later turns name its reply's).
        session = f"s-{run_id}-{q.id}"[:120] if headers else None
        history: list[dict[str, str]] = []
        for turn in q.turns[:-1]:
            text, ext = _ask(client, "endcloud", [*history, {"role": "user", "content": turn}], user, session, args, headers)
            session = session or ext.get("session_id")
            history += [{"role": "user", "content": turn}, {"role": "assistant", "content": text}]
        out.history = history
        final = [*history, {"role": "user", "content": q.question}]
        out.reply, ext = _ask(client, "endcloud", final, user, session, args, headers)
        out.answered_by = str(ext.get("answered_by", ""))
        out.decision, out.scores = ext.get("decision") or {}, ext.get("scores") or {}
        out.cloud_failed = bool(ext.get("cloud_failed", False))
        v = check.judge(out.reply, q, facts)
        out.right, out.reason = v.right, v.reason
        if not args.no_end:
            # Same history, its own session: the forced draft is not a turn of this conversation.
            out.end_reply, _ = _ask(client, "end", final, user if headers else user + "-end",
                                    f"s-{run_id}-{q.id}-end"[:120] if headers else None, args, headers)
            v = check.judge(out.end_reply, q, facts)
            out.end_right, out.end_reason = v.right, v.reason
    except Exception as e:  # one failed conversation is a wrong answer, not the end of the run
        out.error = f"{type(e).__name__}: {e}"[:500]
        out.right, out.reason = False, "request failed"
        if out.end_right is None and not args.no_end:
            out.end_right, out.end_reason = False, "request failed"
    out.seconds = round(time.perf_counter() - t, 3)
    return out


def metrics(outcomes: list[Outcome]) -> dict[str, Any]:
    n = len(outcomes)
    unans = [o for o in outcomes if o.unanswerable]
    ends = [o for o in outcomes if o.end_right is not None]
    m: dict[str, Any] = {
        "questions": n,
        "unanswerable_questions": len(unans),
        "errors": sum(bool(o.error) for o in outcomes),
        "cloud_failed": sum(o.cloud_failed for o in outcomes),
        "right": sum(o.right for o in outcomes) / n if n else None,
        "end_share": sum(o.answered_by == "end" for o in outcomes) / n if n else None,
        "end_drafts_right": sum(bool(o.end_right) for o in ends) / len(ends) if ends else None,
        "wrong_end_reached": sum(o.answered_by == "end" and not o.right for o in outcomes) / n if n else None,
        "unanswerable_answered": sum(not o.right for o in unans),
        "answerable_right": (sum(o.right for o in outcomes if not o.unanswerable) / (n - len(unans))
                             if n > len(unans) else None),
        "answered_by": {k: sum(o.answered_by == k for o in outcomes) for k in sorted({o.answered_by for o in outcomes})},
    }
    return m


def meets(name: str, value: Any) -> bool | None:
    if value is None:
        return None
    op, target, _ = TARGETS[name]
    return value >= target if op == ">=" else value <= target


def table(title: str, m: dict[str, Any]) -> str:
    lines = [f"{title}: {m['questions']} questions ({m['unanswerable_questions']} unanswerable), "
             f"answered by {m['answered_by']}, {m['errors']} request errors, {m['cloud_failed']} cloud failures",
             f"  {'metric':<42}{'figure':>12}   {'target':<9}"]
    for name, (op, target, unit) in TARGETS.items():
        v = m[name]
        if unit == "share":
            fig = "n/a" if v is None else f"{100 * v:.1f} %"
            tgt = f"{'≥' if op == '>=' else '≤'} {100 * target:.0f} %"
        else:
            fig, tgt = str(v), f"{'≥' if op == '>=' else '≤'} {target}"
        ok = meets(name, v)
        lines.append(f"  {LABELS[name]:<42}{fig:>12}   {tgt:<9} {'' if ok is None else ('ok' if ok else 'MISSED')}")
    return "\n".join(lines)


def run_pack(pr: PackRun, args, tmp: Path, run_id: str, log) -> dict[str, Any]:
    from openai import OpenAI

    from endcloud.kb import ShopPack

    pack = ShopPack.load(pr.pack_dir)
    facts = check.PackFacts.from_pack(pack)
    server = None
    info: dict[str, Any] = {"pack": str(pr.pack_dir), "onboarded": False}
    shop = pack_without_questions(pr.pack_dir, tmp / f"pack-{pr.name}" / pr.pack_dir.name)
    try:
        if args.url:
            url = args.url.rstrip("/")
            info["server"] = url
        else:
            ws = None
            if args.onboard and args.onboard_available:
                ws = onboard(shop, Path(args.workspace), tmp / f"onboard-{pr.name}", args.onboard_arg, log)
                if ws is None:
                    return {**info, "skipped": "onboarding failed (see the log above)"}
                info["onboarded"] = True
            if ws is None:
                ws = shadow_workspace(Path(args.workspace), tmp / f"ws-{pr.name}")
            server = Server(ws, shop, args=args, log_path=tmp / f"serve-{pr.name}.log")
            t = time.perf_counter()
            server.wait_ready(args.start_timeout)
            info["server"] = " ".join(server.cmd)
            info["start_s"] = round(time.perf_counter() - t, 1)
            log(f"  server up in {info['start_s']} s on {server.url}")
            url = server.url
        # Retries: a 429 (a server started elsewhere keeps its rate limit) or a dropped connection.
        client = OpenAI(base_url=url + "/v1", api_key=args.api_key or "unused", max_retries=2, timeout=args.request_timeout)
        owners = Owners(url, pack, args, log) if pack.orders else None
        t = time.perf_counter()
        with ThreadPoolExecutor(max_workers=max(1, args.concurrency)) as pool:
            outcomes = list(pool.map(lambda q: ask_conversation(client, q, facts, run_id, args, owners), pr.questions))
        info["ask_s"] = round(time.perf_counter() - t, 1)
        errors = [o for o in outcomes if o.error]
        if errors:
            log(f"  {len(errors)} conversations failed, e.g. {errors[0].id}: {errors[0].error[:300]}")
            if server is not None:
                log("  server log tail:\n" + server.tail(10))
        m = metrics(outcomes)
        return {**info, "metrics": m, "met": {k: meets(k, m[k]) for k in TARGETS},
                "questions": [asdict(o) for o in outcomes]}
    except RuntimeError as e:
        log(f"  {e}")
        return {**info, "skipped": str(e).splitlines()[0]}
    finally:
        if server is not None:
            server.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workspace", "-w", required=True, help="a built workspace (base/, adapters/, scoring/...): e.g. the demo's")
    ap.add_argument("--packs", help=f"comma-separated held-out pack names or folders (default: every pack in {HELDOUT})")
    ap.add_argument("--demo-shop", action="store_true", help="also the workspace's own shop/ with its chats/eval.jsonl")
    ap.add_argument("--limit", type=int, help="at most this many questions per pack, spread over the file")
    ap.add_argument("--out", type=Path, help="write figures and every reply as JSON here")
    ap.add_argument("--onboard", action="store_true", help="run `endcloud shop onboard PACK -w TMP` per pack first (when it exists)")
    ap.add_argument("--onboard-arg", action="append", default=[], help="extra argument for `shop onboard` (repeatable)")
    ap.add_argument("--api-key", default=os.environ.get("ENDCLOUD_BENCH_API_KEY"),
                    help="the client's API key (env ENDCLOUD_BENCH_API_KEY); also given to the server when `serve` takes --api-key")
    ap.add_argument("--customer-secret", default=os.environ.get("ENDCLOUD_SERVE_CUSTOMER_SECRET") or secrets.token_hex(32),
                    help="signs the order owners' customer tokens (default: env ENDCLOUD_SERVE_CUSTOMER_SECRET, else random; "
                         "the server started here gets it)")
    ap.add_argument("--admin-token", default=os.environ.get("ENDCLOUD_ADMIN_TOKEN"),
                    help="the server's admin token, for registering order owners (env ENDCLOUD_ADMIN_TOKEN; "
                         "a server without one lets loopback clients in)")
    ap.add_argument("--serve-arg", action="append", default=[], help="extra argument for `endcloud serve` (repeatable)")
    ap.add_argument("--serve-env", action="append", default=[], help="NAME=VALUE in the server's environment (repeatable)")
    ap.add_argument("--cloud", help="the server's --cloud (openai, reference, none); default: serve's own choice")
    ap.add_argument("--url", help="ask a server already running at this URL (one pack, the shop it serves) instead of starting one")
    ap.add_argument("--concurrency", type=int, default=4, help="conversations in flight at once")
    ap.add_argument("--seed", type=int, default=0, help="sampling seed sent with every request (none: -1)")
    ap.add_argument("--temperature", type=float, help="sampling temperature sent with every request (default: the server's)")
    ap.add_argument("--max-tokens", type=int, help="max_tokens of every reply (default: the server's)")
    ap.add_argument("--no-end", action="store_true", help="skip the forced end-model drafts (model=\"end\")")
    ap.add_argument("--start-timeout", type=float, default=300.0, help="seconds to wait for the server to be ready")
    ap.add_argument("--request-timeout", type=float, default=180.0, help="seconds per request")
    args = ap.parse_args(argv)
    if args.seed is not None and args.seed < 0:
        args.seed = None
    for kv in args.serve_env:
        if "=" not in kv:
            raise SystemExit(f"--serve-env wants NAME=VALUE, got {kv!r}")
    ws = Path(args.workspace)
    if not ws.is_dir():
        raise SystemExit(f"--workspace {str(ws)!r} is not a folder; build one with `endcloud demo -w {ws}`")
    runs = select_packs(args)
    if args.url and len(runs) != 1:
        raise SystemExit("--url serves one shop: name exactly one pack with --packs")

    def log(msg: str) -> None:
        print(msg, flush=True)

    args.onboard_available = False
    if args.onboard:
        args.onboard_available = command_exists("shop", "onboard")
        if not args.onboard_available:
            log("--onboard: `endcloud shop onboard` does not exist in this checkout; skipping onboarding, "
                "every pack is served from the shadow of --workspace")
    args.server_takes_key = None
    if args.api_key and not args.url:
        help_text = serve_help()
        args.server_takes_key = ("env" if "ENDCLOUD_SERVE_API_KEYS" in help_text else
                                 "flag" if "--api-key" in help_text else None)
        if args.server_takes_key is None:
            log("--api-key: `endcloud serve` has no --api-key option; the key goes to the client only "
                "(give the server what it needs with --serve-arg / --serve-env)")

    run_id = uuid.uuid4().hex[:8]
    tmp = Path(tempfile.mkdtemp(prefix="bench-quality-"))
    report: dict[str, Any] = {"workspace": str(ws.resolve()), "run": run_id, "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
                              "targets": {k: {"op": op, "target": t} for k, (op, t, _) in TARGETS.items()},
                              "options": {k: v for k, v in vars(args).items() if k not in ("api_key", "out", "customer_secret", "admin_token")}, "packs": {}}
    report["options"]["out"] = str(args.out) if args.out else None
    log(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; workspace {ws}")
    all_outcomes: list[Outcome] = []
    try:
        for pr in runs:
            log(f"\n[{pr.name}] {len(pr.questions)} questions from {pr.pack_dir}")
            res = run_pack(pr, args, tmp, run_id, log)
            report["packs"][pr.name] = res
            if "metrics" in res:
                log(table(pr.name, res["metrics"]))
                if pr.name != DEMO:  # the overall figures are the held-out shops' alone
                    all_outcomes += [Outcome(**q) for q in res["questions"]]
            else:
                log(f"  skipped: {res.get('skipped')}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if all_outcomes and len([n for n in report["packs"] if n != DEMO]) > 1:
        m = metrics(all_outcomes)
        report["overall"] = {"metrics": m, "met": {k: meets(k, m[k]) for k in TARGETS}}
        log("\n" + table("all held-out packs", m))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, ensure_ascii=False, indent=1), encoding="utf-8")
        log(f"\nwrote {args.out}")
    return 0 if any("metrics" in r for r in report["packs"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
