"""Benchmark `endcloud corpus prepare` on a large JDDC-format file.

Writes a synthetic JDDC file (7 tab fields, consecutive speaker runs, masked placeholders,
some raw PII the redactor must catch, a few NULL / system / routing lines), runs the whole
pipeline (read -> clean -> redact -> pairs -> dedupe -> write) and prints utterances/s and
peak RSS, with the parent's and workers' RSS sampled along the way to show memory is flat.

    .venv/bin/python bench/bench_corpus.py                      # 1M sessions, 2 workers
    .venv/bin/python bench/bench_corpus.py --sessions 50000 --workers 1
    .venv/bin/python bench/bench_corpus.py --no-redact          # the cost of redaction

The input is cached under --data-dir (generated once per size/seed); the output folder is
removed afterwards unless --keep is given (it is several GB at 1M sessions).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Fragments are combined at random so almost every pair is distinct (the dedupe keeps
# them): a bench where dedupe dropped most pairs would skip most of the writing.
_Q_OPEN = ["", "你好 ", "亲 ", "在吗 ", "请问", "客服 ", "您好，", "我想问下", "麻烦问一下", "hi "]
_Q_BODY = [
    "我的订单什么时候发货", "这个{p}有货吗", "{p}能便宜点吗", "地址可以帮我修改下吗", "发票怎么开",
    "[订单x]还没到", "退货运费谁出", "{p}是正品吗", "能开增值税发票吗", "为什么还没有物流信息",
    "我要退款", "可以货到付款吗", "[数字x]号能送到吗", "优惠券怎么用不了", "{p}保修多久",
    "快递到[站点x]了吗", "价保怎么申请", "买了[数字x]件能送赠品吗", "换货要多久", "尺码偏大还是偏小",
]
_Q_TAIL = ["", "?", "？", "。", " 着急用", " 谢谢", "～", " 在线等", "!!", " #E-s[数字x]"]
_A_OPEN = ["", "亲 ", "亲爱的 ", "您好，", "亲亲，", "客官 ", "好的呢 ", "抱歉让您久等了 "]
_A_BODY = [
    "这边帮您查询一下哦", "{p}目前是有货的呢", "订单已经在配送中了，预计[数字x]天送达", "可以的，帮您备注好了",
    "退货运费由我们承担的哦", "发票会在订单完成后开具", "价保请在我的订单里申请", "这边给您登记加急处理",
    "{p}支持七天无理由退换", "新旧地址在同一个市内可以改", "优惠券需要满[金额x]才能用哦", "已经帮您催促仓库了",
    "换货一般[数字x]个工作日", "尺码是标准的，按平时的买就好", "正品保证，假一赔十", "您看下这个链接 http://item.jd.com/{n}.html",
]
_A_TAIL = ["", "。", "哦", "呢", "~", " 请问还有其他可以帮您的吗?", " 祝您生活愉快", "！"]
_PRODUCTS = ["手机", "毛巾", "空调", "洗衣机", "坚果礼盒", "耳机", "电饭煲", "羽绒服", "跑鞋", "奶粉", "笔记本电脑", "台灯"]
_PII = [
    "我电话是1{n:010d}", "收件人张伟 电话1{n:010d}", "邮箱 user{n}@example.com", "订单号{n:012d}",
    "地址是北京市朝阳区建国路{k}号", "身份证11010519491231002X", "手机 138{k:04d}{k:04d}",
]


def _utterance(rng: random.Random, role: int) -> str:
    p = rng.choice(_PRODUCTS)
    n = rng.randrange(10**9)
    if role == 0:
        s = rng.choice(_Q_OPEN) + rng.choice(_Q_BODY).format(p=p) + rng.choice(_Q_TAIL)
        if rng.random() < 0.06:
            s += " " + rng.choice(_PII).format(n=n, k=rng.randrange(1000, 9999))
    else:
        s = rng.choice(_A_OPEN) + rng.choice(_A_BODY).format(p=p, n=n) + rng.choice(_A_TAIL)
    return s


def write_jddc(path: Path, sessions: int, seed: int = 0) -> int:
    """Write `sessions` JDDC sessions; return the number of lines (utterances)."""
    rng = random.Random(seed)
    lines_total = 0
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        buf: list[str] = []
        for i in range(sessions):
            sid = f"{rng.getrandbits(128):032x}"
            head = f"{sid}\tUSERID_{10_000_000 + i % 900_000}\t"
            if rng.random() < 0.3:
                buf.append(f"{head}0\t0\t0\tnan\t人工客服 京东快递(移动端) 你好\n")
            n_msgs = rng.randint(4, 16)  # mean 10 messages + runs, ~12 lines a session
            role = 0
            for _ in range(n_msgs):
                for _ in range(1 + (rng.random() < 0.25) + (rng.random() < 0.05)):
                    r = rng.random()
                    content = "NULL" if r < 0.01 else ("系统提示：会话已转接" if r < 0.015 else _utterance(rng, role))
                    buf.append(f"{head}{role}\t0\t0\tnan\t{content}\n")
                role ^= 1
            if len(buf) > 20_000:
                lines_total += len(buf)
                f.writelines(buf)
                buf.clear()
        lines_total += len(buf)
        f.writelines(buf)
    os.replace(tmp, path)
    return lines_total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sessions", type=int, default=1_000_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--no-redact", action="store_true", help="skip redaction (to see its cost)")
    ap.add_argument("--data-dir", default=os.path.join(tempfile.gettempdir(), "endcloud-bench-corpus"))
    ap.add_argument("--keep", action="store_true", help="keep the output folder")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import psutil

    from endcloud.corpus import prepare

    data = Path(args.data_dir)
    data.mkdir(parents=True, exist_ok=True)
    src = data / f"jddc_{args.sessions}_{args.seed}.txt"
    if not src.exists():
        t = time.perf_counter()
        n = write_jddc(src, args.sessions, args.seed)
        print(f"generated {src} ({n:,} lines, {src.stat().st_size / 2**20:,.0f} MiB) in {time.perf_counter() - t:.0f} s")
    out = data / f"out_{args.sessions}_{args.workers}"
    me = psutil.Process()
    samples: list[tuple[float, float, float, int]] = []
    last = [0.0]
    t0 = time.perf_counter()

    def progress(done: int, total: int, counts) -> None:
        # Called in the parent after every chunk: return at once unless a sample is due.
        # (Scanning /proc for the workers on every chunk cost the parent ~2 ms a chunk,
        # which the parent's CPU figure then charged to the pipeline.)
        now = time.perf_counter()
        if now - last[0] < 2.0 and done < total:
            return
        last[0] = now
        worker_rss = 0
        for k in me.children(recursive=True):
            try:
                worker_rss = max(worker_rss, k.memory_info().rss)
            except psutil.Error:
                pass
        samples.append((now - t0, me.memory_info().rss / 2**20, worker_rss / 2**20, counts.get("utterances_in", 0)))

    load_before = os.getloadavg()
    report = prepare([src], out, workers=args.workers, redact=not args.no_redact, progress=progress)
    load_after = os.getloadavg()
    # CPU seconds as `prepare` counted them (the parent with all its threads; each worker
    # reports its own), plus the forkserver that started the workers (still alive here).
    parent_cpu = report.cpu_seconds["parent"]
    workers_cpu = report.cpu_seconds["workers"]
    for k in me.children(recursive=True):
        try:
            ct = k.cpu_times()
            workers_cpu += ct.user + ct.system
        except psutil.Error:
            pass
    utts = report.counts["utterances_in"]
    # On a shared, loaded machine wall time says little; CPU seconds say what the work costs.
    # "on 2 free cores" assumes the parent and the workers overlap perfectly.
    cores = min(2, args.workers + 1) if args.workers > 1 else 1
    cpu_rate = utts / ((parent_cpu + workers_cpu) / cores) if parent_cpu + workers_cpu > 0 else 0.0
    print(report.to_text())
    print(f"RSS checkpoints (t s: parent MB / largest worker MB / utterances read):")
    step = max(1, len(samples) // 12)
    for t, p, w, u in samples[::step] + ([samples[-1]] if samples and (len(samples) - 1) % step else []):
        print(f"  {t:7.1f}: {p:7.0f} / {w:7.0f} / {u:,}")
    print(
        f"RESULT sessions={args.sessions:,} workers={args.workers} redact={not args.no_redact} "
        f"utterances={report.counts['utterances_in']:,} seconds={report.seconds:.1f} "
        f"utterances_per_s={report.utterances_per_s:,.0f} peak_rss_parent_mb={report.peak_rss_mb['parent']:.0f} "
        f"peak_rss_worker_mb={report.peak_rss_mb['worker_max']:.0f} "
        f"loadavg_before={load_before[0]:.2f} loadavg_after={load_after[0]:.2f}"
    )
    print(
        f"CPU sessions={args.sessions:,} parent_cpu_s={parent_cpu:.1f} workers_cpu_s={workers_cpu:.1f} "
        f"utterances_per_cpu_s={utts / max(parent_cpu + workers_cpu, 1e-9):,.0f} "
        f"est_utterances_per_s_on_{cores}_free_cores={cpu_rate:,.0f}"
    )
    if not args.keep:
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
