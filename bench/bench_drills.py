"""Drills for `endcloud serve`: kill -9 under load, a faulty cloud, and a memory soak.

Each drill runs the real command (`python -m endcloud serve`, its own process, the engine in
its own process as in production) on a workspace built here: a random-weight Qwen2 end model
of the embedded-default shape (hidden 256 x 4 layers, a zh+en BPE tokenizer trained on a few
shop sentences; `--size conftest` for the test fixture's), real SQLite, 127.0.0.1.

    .venv/bin/python bench/bench_drills.py                         # all three, full length (~20 min)
    .venv/bin/python bench/bench_drills.py --kills 5 --minutes 1   # a short check
    .venv/bin/python bench/bench_drills.py --only soak --minutes 10

kill    `--kills` times: customers chat and send feedback (non-streamed turns, 8 at once);
        1.5-4 s after the first feedback is acknowledged the server is killed -9; then every reply and every feedback the
        server acknowledged (HTTP 200) must be in the database, which must pass SQLite's
        integrity check; the engine process must not outlive its server; the next round
        restarts on the same workspace. Figures: acknowledged vs stored, lost (must be 0),
        in flight (stored, never acknowledged), restarts to ready.
cloud   the fault-injecting cloud double in its own process (`python -m endcloud.testing`:
        429 with Retry-After, 500, hangs, malformed and empty bodies, good bodies that drip)
        behind the real OpenAI-compatible teacher and privacy gate, every turn routed to it
        (min_match 1.0, plus forced model="cloud" turns), 16 customers. Every customer must
        be answered (200 with text), and the takeover's p95 (the server's `takeover_ms`:
        from the cloud call's start to the reply being ready, the fallback end reply
        included) must stay under takeover_deadline_s + 1 s; the whole turns' latency as
        the customers saw it is printed beside it.
soak    16 customers chat (sessions of 3-8 turns, then a new one: many distinct sessions)
        through a warm-up, then `--minutes` more; the RSS of the server and of its engine
        process, and the engine's bounded parts (/metrics endcloud_engine_memory_bytes:
        prefix cache, KV pools, transcripts), are sampled every few seconds. The warm-up
        lasts at least `--warmup` s and until the prefix cache holds 95 % of its budget
        (prefix_cache_mb, 256 MB by default: ~75 s at 12 turns/s for this model, longer on
        a busy machine; at most `--warmup-max` s). After it the engine's memory must stay
        flat: growth from the end of warm-up to the mean of the last 10 % of samples < 10 %.

Random weights rarely emit end-of-turn, so replies run to max_new_tokens: a worst case.
Exits 1 when a drill fails its criterion.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling benches

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# The serving bench's shop sentences, model shapes and model builder: the drills serve the same model.
from bench_serve import SIZES, build_model, free_port  # noqa: E402

QUESTIONS = ["几天发货？", "可以用优惠券吗？", "Do you ship today?", "How do I return this towel?", "这款毛巾是纯棉的吗？",
             "What courier do you use?", "退货运费谁出？", "Is it in stock?", "我的订单到哪了？", "Can I change the address?"]
CHAT = "/v1/chat/completions"
SERVER_ENV: dict[str, str] = {}  # --set: serve settings for every drill's server


# ---- the workspace and the server ------------------------------------------------------
def build_workspace(out: Path, size: str) -> Path:
    build_model(out / "base", size)
    return out


class Server:
    """`python -m endcloud serve` on a workspace, in its own process."""

    def __init__(self, ws: Path, *, cloud_url: str | None = None, max_new_tokens: int = 32, **env: str):
        self.ws, self.port = ws, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = dict(os.environ, ENDCLOUD_SERVE_RATE_LIMIT_PER_MINUTE="1000000",
                        ENDCLOUD_SERVE_MAX_NEW_TOKENS=str(max_new_tokens), ENDCLOUD_SERVE_TORCH_THREADS="1",
                        **SERVER_ENV, **{k: str(v) for k, v in env.items()})
        self.cloud = ["--cloud", "none"]
        if cloud_url:
            self.env.update(ENDCLOUD_CLOUD_BASE_URL=cloud_url, ENDCLOUD_CLOUD_MODEL="drill", ENDCLOUD_CLOUD_API_KEY="k")
            self.cloud = ["--cloud", "openai"]
        self.proc: subprocess.Popen | None = None
        self.log = ws / "server.log"

    def start(self, timeout: float = 900.0) -> float:
        """Start and wait for /readyz; seconds it took."""
        from tests.serve.ready import wait_ready  # the tests' readiness wait

        t0 = time.monotonic()
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "endcloud", "serve", "-w", str(self.ws), "--port",
                                          str(self.port), "--log-level", "warning", *self.cloud],
                                         env=self.env, stdout=log, stderr=log, cwd=ROOT)
        why = wait_ready(self.url, self.proc, timeout_s=timeout)
        if why is not None:
            self.stop()
            raise SystemExit(f"{why} ({time.monotonic() - t0:.0f} s); see {self.log}")
        return time.monotonic() - t0

    def engine_pid(self) -> int | None:
        """The engine process (the continuous batch's child), by its spawn command line."""
        import psutil

        try:
            kids = psutil.Process(self.proc.pid).children()
        except psutil.Error:
            return None
        engines = [k for k in kids if "spawn_main" in " ".join(_cmdline(k)) and
                   "resource_tracker" not in " ".join(_cmdline(k))]
        return max(engines, key=lambda k: _rss(k.pid), default=None).pid if engines else None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _cmdline(p) -> list[str]:
    try:
        return p.cmdline()
    except Exception:
        return []


def _rss(pid: int | None) -> float:
    """Resident memory of `pid` in MB (0 when gone)."""
    import psutil

    try:
        return psutil.Process(pid).memory_info().rss / 2**20 if pid else 0.0
    except psutil.Error:
        return 0.0


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = (len(xs) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


# ---- kill -9 under load ----------------------------------------------------------------
async def _load_until_killed(url: str, acked_replies: set, acked_feedback: set, errors: list, stop: asyncio.Event):
    import aiohttp

    async def customer(i: int):
        session = None
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
            while not stop.is_set():
                body = {"model": "end", "messages": [{"role": "user", "content": random.choice(QUESTIONS)}],
                        "user": f"drill-{i}", **({"session_id": session} if session else {})}
                try:
                    async with http.post(url + CHAT, json=body) as r:
                        if r.status != 200:
                            errors.append(f"chat HTTP {r.status}")
                            continue
                        reply = await r.json()
                    acked_replies.add(reply["id"])  # acknowledged: the customer has it
                    session = reply["endcloud"]["session_id"]
                    async with http.post(url + "/v1/feedback",
                                         json={"message_id": reply["id"], "rating": random.choice(["up", "down"])}) as r:
                        if r.status == 200:
                            acked_feedback.add((await r.json())["feedback"]["id"])
                        else:
                            errors.append(f"feedback HTTP {r.status}")
                except (aiohttp.ClientError, asyncio.TimeoutError):
                    return  # the server is gone: this customer stops
    await asyncio.gather(*(customer(i) for i in range(8)))


def drill_kill(ws: Path, rounds: int) -> bool:
    print(f"\n== kill -9 under load: {rounds} rounds ==", flush=True)
    server = Server(ws)
    totals = {"replies": 0, "feedback": 0, "lost": 0, "in_flight": 0, "orphans": 0, "errors": 0}
    readies = []
    ok = True
    try:
        ok = _kill_rounds(server, rounds, totals, readies)
    finally:
        server.stop()  # a round that failed midway leaves no server behind
    print(f"kill: {rounds} rounds, acknowledged {totals['replies']} replies + {totals['feedback']} feedback, "
          f"lost {totals['lost']} (acknowledged == stored: {totals['lost'] == 0}), in flight at the kill "
          f"{totals['in_flight']} (stored, not acknowledged), orphaned engine processes "
          f"{totals['orphans']}, non-200 answers {totals['errors']}, restart to ready p50 "
          f"{statistics.median(readies):.1f} s -> {'PASS' if ok else 'FAIL'}", flush=True)
    return ok


def _stored(ws: Path) -> tuple[set[str], set[int], str]:
    """(reply ids, feedback ids, integrity check) of the workspace database, read by SQLite itself."""
    db = sqlite3.connect(ws / "endcloud.db")
    try:
        integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
        replies = {r[0] for r in db.execute("SELECT message_id FROM replies")}
        feedback = {r[0] for r in db.execute("SELECT id FROM feedback")}
    finally:
        db.close()
    return replies, feedback, integrity


def _kill_rounds(server: Server, rounds: int, totals: dict, readies: list) -> bool:
    import psutil

    ws = server.ws
    ok = True
    for rnd in range(rounds):
        readies.append(server.start())
        engine = server.engine_pid()
        before = _stored(ws)[0]
        acked_r: set[str] = set()
        acked_f: set[int] = set()
        errors: list[str] = []

        async def go():
            stop = asyncio.Event()
            load = asyncio.create_task(_load_until_killed(server.url, acked_r, acked_f, errors, stop))
            t0 = time.monotonic()
            while not acked_f and time.monotonic() - t0 < 120:  # the load is on: a reply and its feedback stored
                await asyncio.sleep(0.05)
            await asyncio.sleep(random.uniform(1.5, 4.0))
            server.proc.send_signal(signal.SIGKILL)  # mid-load: requests in flight, writes in flight
            stop.set()
            await load

        asyncio.run(go())
        server.proc.wait()
        orphan = False
        if engine:
            try:
                psutil.Process(engine).wait(timeout=30)  # the engine process ends with its server (EOF on its pipe)
            except psutil.NoSuchProcess:
                pass
            except psutil.TimeoutExpired:
                orphan = True
                psutil.Process(engine).kill()
        stored_r, stored_f, integrity = _stored(ws)
        lost = len(acked_r - stored_r) + len(acked_f - stored_f)
        in_flight = len(stored_r - before - acked_r)  # stored, but the kill came before the answer left
        totals["in_flight"] += in_flight
        totals["replies"] += len(acked_r)
        totals["feedback"] += len(acked_f)
        totals["lost"] += lost
        totals["orphans"] += orphan
        totals["errors"] += len(errors)
        print(f"round {rnd + 1:2d}: ready in {readies[-1]:.1f} s; acknowledged {len(acked_r)} replies + "
              f"{len(acked_f)} feedback; lost {lost}; in flight {in_flight}; integrity {integrity}; "
              f"engine process outlived: {orphan}",
              flush=True)
        ok &= lost == 0 and integrity == "ok" and not orphan
    return ok


# ---- a faulty cloud ---------------------------------------------------------------------
def drill_cloud(ws: Path, *, users: int, turns: int, deadline_s: float) -> bool:
    import aiohttp

    print(f"\n== faulty cloud: {users} customers x {turns} turns, takeover deadline {deadline_s:g} s ==", flush=True)
    # every good body drips in 16-byte pieces 0.1 s apart (~2 s for a reply); hangs outlast any deadline
    faults = ["--latency", "0.3", "--p429", "0.15", "--p500", "0.15", "--ptimeout", "0.1", "--pmalformed", "0.1",
              "--pempty", "0.05", "--drip", "0.1", "--retry-after", "1", "--seed", "7"]
    cloud = subprocess.Popen([sys.executable, "-m", "endcloud.testing", *faults], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, cwd=ROOT)
    base_url = cloud.stdout.readline().strip()
    server = Server(ws, cloud_url=base_url, ENDCLOUD_SERVE_MIN_MATCH="1.0",
                    ENDCLOUD_SERVE_TAKEOVER_DEADLINE_S=str(deadline_s))
    rows: list[dict] = []
    try:
        server.start()

        async def customer(i: int):
            session = None
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as http:
                for t in range(turns):
                    body = {"model": "cloud" if t % 3 == 2 else "endcloud", "user": f"c{i}",
                            "messages": [{"role": "user", "content": random.choice(QUESTIONS)}],
                            **({"session_id": session} if session else {})}
                    t0 = time.perf_counter()
                    row = {"status": None, "text": "", "route": None, "failed": None}
                    try:
                        async with http.post(server.url + CHAT, json=body) as r:
                            row["status"] = r.status
                            data = await r.json(content_type=None)
                        if r.status == 200:
                            e = data["endcloud"]
                            session = e["session_id"]
                            row.update(text=data["choices"][0]["message"]["content"] or "",
                                       route=e["decision"]["route"], failed=e["cloud_failed"], by=e["answered_by"],
                                       takeover=e["decision"].get("takeover_ms"))
                    except (aiohttp.ClientError, asyncio.TimeoutError) as ex:
                        row["status"] = type(ex).__name__
                    row["seconds"] = time.perf_counter() - t0
                    rows.append(row)

        async def main():
            await asyncio.gather(*(customer(i) for i in range(users)))

        asyncio.run(main())
    finally:
        server.stop()
        cloud.send_signal(signal.SIGTERM)
        try:
            _, err = cloud.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            cloud.kill()
            _, err = cloud.communicate()
    answered = [r for r in rows if r["status"] == 200 and r["text"].strip()]
    turns = [r["seconds"] for r in rows if r["route"] == "cloud"]  # the whole turn, as the customer saw it
    takeovers = [r["takeover"] / 1000 for r in rows if r.get("takeover") is not None]  # the cloud's part of it
    p95 = pct(takeovers, 95)
    by_cloud = sum(1 for r in answered if r.get("by") == "cloud")
    failed = sum(1 for r in answered if r.get("failed"))
    ok = len(answered) == len(rows) and p95 < deadline_s + 1.0
    print(f"the cloud double: {err.strip().splitlines()[-1] if err.strip() else '?'}")
    print(f"cloud: {len(rows)} turns, answered {len(answered)} ({len(rows) - len(answered)} not); by the cloud "
          f"{by_cloud}, end reply after a cloud failure {failed}; takeover (server: cloud call start -> reply "
          f"ready) p50 {pct(takeovers, 50):.2f} s, p95 {p95:.2f} s, max {max(takeovers, default=float('nan')):.2f} s "
          f"(bound: deadline {deadline_s:g} + 1 s); whole turns routed to the cloud (client) p50 {pct(turns, 50):.2f} s, "
          f"p95 {pct(turns, 95):.2f} s -> {'PASS' if ok else 'FAIL'}", flush=True)
    return ok


# ---- memory soak ------------------------------------------------------------------------
def _engine_memory(text: str) -> dict[str, float]:
    """endcloud_engine_memory_bytes{part} of a /metrics page, in MB."""
    out = {}
    for line in text.splitlines():
        if line.startswith("endcloud_engine_memory_bytes{"):
            part = line.split('part="', 1)[1].split('"', 1)[0]
            out[part] = float(line.rsplit(" ", 1)[1]) / 2**20
    return out


def drill_soak(ws: Path, *, users: int, minutes: float, sample_s: float, warmup_s: float, warmup_max_s: float) -> bool:
    import aiohttp

    cache_mb = float(SERVER_ENV.get("ENDCLOUD_SERVE_PREFIX_CACHE_MB", 256.0))
    print(f"\n== soak: {users} customers; warm-up >= {warmup_s:g} s and until the prefix cache holds 95 % of its "
          f"{cache_mb:g} MB (at most {warmup_max_s:g} s); then {minutes:g} min measured ==", flush=True)
    server = Server(ws)
    samples: list[tuple[float, float, float, dict]] = []  # (t, server MB, engine MB, engine parts MB)
    stats = {"turns": 0, "errors": 0, "sessions": 0}
    clock: dict[str, float] = {}
    try:
        server.start()
        engine = server.engine_pid()
        t_start = time.monotonic()
        clock["end"] = t_start + warmup_max_s + minutes * 60  # until the warm-up is seen to end

        def running() -> bool:
            return time.monotonic() < clock["end"]

        async def customer(i: int):
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as http:
                while running():
                    session, n = None, random.randint(3, 8)  # a session of a few turns, then a new one
                    stats["sessions"] += 1
                    for _ in range(n):
                        if not running():
                            return
                        body = {"model": random.choice(["end", "endcloud"]), "user": f"soak-{i}",
                                "stream": random.random() < 0.5,
                                "messages": [{"role": "user", "content": random.choice(QUESTIONS)}],
                                **({"session_id": session} if session else {})}
                        try:
                            async with http.post(server.url + CHAT, json=body) as r:
                                if r.status != 200:
                                    stats["errors"] += 1
                                    continue
                                if body["stream"]:
                                    async for raw in r.content:
                                        line = raw.decode().strip()
                                        if line.startswith("data: {") and session is None:
                                            ext = json.loads(line[6:]).get("endcloud") or {}
                                            session = ext.get("session_id") or session
                                else:
                                    session = (await r.json())["endcloud"]["session_id"]
                            stats["turns"] += 1
                        except (aiohttp.ClientError, asyncio.TimeoutError):
                            stats["errors"] += 1

        async def sampler():
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
                while True:
                    try:
                        async with http.get(server.url + "/metrics") as r:
                            parts = _engine_memory(await r.text())
                    except (aiohttp.ClientError, asyncio.TimeoutError):
                        parts = {}
                    t = time.monotonic() - t_start
                    samples.append((t, _rss(server.proc.pid), _rss(engine), parts))
                    full = parts.get("prefix_cache", 0.0) >= 0.95 * cache_mb
                    if "warm" not in clock and t >= warmup_s and (full or t >= warmup_max_s):
                        clock["warm"] = t
                        clock["end"] = time.monotonic() + minutes * 60
                    if not running():
                        return
                    await asyncio.sleep(sample_s)

        async def main():
            await asyncio.gather(sampler(), *(customer(i) for i in range(users)))

        asyncio.run(main())
    finally:
        server.stop()
    total = samples[-1][0] if samples else 0.0
    warm = clock.get("warm", total)
    after = [x for x in samples if x[0] >= warm] or samples[-1:]
    tail = samples[-max(1, len(after) // 10):]
    ok = True
    for label, k in (("server", 1), ("engine", 2)):
        start, at_warm = samples[0][k], after[0][k]
        end = statistics.mean(x[k] for x in tail)
        growth = (end - at_warm) / at_warm * 100 if at_warm else float("nan")
        print(f"soak {label} RSS: start {start:.0f} MB, after warm-up ({warm:.0f} s) {at_warm:.0f} MB, end {end:.0f} MB, "
              f"max {max(x[k] for x in samples):.0f} MB; growth after warm-up {growth:+.1f} %")
        if label == "engine":
            ok = engine is not None and growth < 10.0
    last = samples[-1][3] if samples else {}
    print("soak engine parts at the end (each within its setting): "
          + ", ".join(f"{p} {mb:.1f} MB" for p, mb in sorted(last.items()))
          + f"; prefix cache budget {cache_mb:g} MB")
    series = ", ".join(f"{t:.0f}s:{e:.0f}" for t, _, e, _ in samples[:: max(1, len(samples) // 12)])
    print(f"soak engine RSS MB over time: {series}")
    print(f"soak: {stats['turns']} turns ({stats['turns'] / max(total, 1e-9):.1f}/s), {stats['sessions']} sessions, "
          f"{stats['errors']} errors -> {'PASS' if ok and not stats['errors'] else 'FAIL'}", flush=True)
    return ok and not stats["errors"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="kill,cloud,soak", help="comma-separated drills to run (kill, cloud, soak)")
    ap.add_argument("--kills", type=int, default=20, help="kill -9 rounds")
    ap.add_argument("--minutes", type=float, default=10.0, help="soak: minutes measured after the warm-up")
    ap.add_argument("--warmup", type=float, default=60.0, help="soak: the least seconds of load before measuring")
    ap.add_argument("--warmup-max", type=float, default=900.0,
                    help="soak: the most seconds of warm-up, when the prefix cache is slow to fill")
    ap.add_argument("--users", type=int, default=16, help="customers in the cloud drill and the soak")
    ap.add_argument("--cloud-turns", type=int, default=6, help="turns per customer in the cloud drill")
    ap.add_argument("--deadline", type=float, default=4.0, help="takeover_deadline_s of the cloud drill")
    ap.add_argument("--sample-s", type=float, default=5.0, help="soak: seconds between memory samples")
    ap.add_argument("--size", choices=sorted(SIZES), default="default")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", action="append", default=[], metavar="SETTING=VALUE",
                    help="a serve setting for every drill's server, e.g. --set prefix_cache_mb=64 (repeatable)")
    args = ap.parse_args(argv)
    for kv in args.set:
        key, _, value = kv.partition("=")
        SERVER_ENV["ENDCLOUD_SERVE_" + key.strip().upper()] = value.strip()
    random.seed(args.seed)
    drills = [d.strip() for d in args.only.split(",") if d.strip()]
    bad = [d for d in drills if d not in ("kill", "cloud", "soak")]
    if bad:
        ap.error(f"unknown drills {bad}; use kill, cloud, soak")
    tmp = Path(tempfile.mkdtemp(prefix="bench-drills-"))
    print(f"workspace {tmp} ({args.size} model); {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}"
          + (f"; settings {' '.join(args.set)}" if args.set else ""), flush=True)
    results = {}
    for d in drills:
        ws = build_workspace(tmp / d, args.size)  # each drill its own database
        if d == "kill":
            results[d] = drill_kill(ws, args.kills)
        elif d == "cloud":
            results[d] = drill_cloud(ws, users=args.users, turns=args.cloud_turns, deadline_s=args.deadline)
        else:
            results[d] = drill_soak(ws, users=args.users, minutes=args.minutes, sample_s=args.sample_s,
                                    warmup_s=args.warmup, warmup_max_s=args.warmup_max)
    print("\n" + ", ".join(f"{d}: {'PASS' if ok else 'FAIL'}" for d, ok in results.items()))
    return 0 if all(results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
