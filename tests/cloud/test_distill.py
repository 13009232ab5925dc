"""`endcloud distill`: labels, resumability after a kill, the budget cap, the reference teacher."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from endcloud.cli import main
from endcloud.cloud import CostLedger, OpenAITeacher, PriceTable, ResponseCache
from endcloud.cloud.cache import CachedTeacher
from endcloud.cloud.distill import distill, read_pairs
from endcloud.errors import DataError
from endcloud.records import Label
from endcloud.testing import FaultyCloud

QUESTIONS = ["发什么快递？", "能发顺丰吗", "今天下单今天能发货吗？", "可以退货吗？", "退款多久到账？", "有优惠券吗？",
             "能开发票吗", "纯棉方巾多少钱？", "珊瑚绒浴巾有货吗", "发到新疆几天能到？"]


def write_pairs(path: Path, n: int) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            q = f"{QUESTIONS[i % len(QUESTIONS)]}（{i}）"
            f.write(json.dumps({"id": f"p{i}", "source": "t", "session": f"s{i}", "lang": "zh", "context": [],
                                "query": q, "response": f"人工回复{i}"}, ensure_ascii=False) + "\n")
    return path


def labels_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def cloud_env(cloud: FaultyCloud, home: Path) -> dict[str, str]:
    return {**os.environ, "ENDCLOUD_CLOUD_BASE_URL": cloud.base_url, "ENDCLOUD_CLOUD_MODEL": "gemini-1.5-pro",
            "ENDCLOUD_CLOUD_API_KEY": "sk-test", "ENDCLOUD_HOME": str(home)}


def test_resume_after_kill_labels_every_pair_exactly_once(tmp_path, monkeypatch, capsys):
    n = 30
    pairs = write_pairs(tmp_path / "pairs.jsonl", n)
    out = tmp_path / "labels" / "labels.jsonl"
    cmd = [sys.executable, "-m", "endcloud", "distill", str(pairs), "-o", str(out), "--teacher", "openai",
           "--concurrency", "2", "--shots", "5", "--no-progress"]
    with FaultyCloud(latency=0.1) as cloud:
        env = cloud_env(cloud, tmp_path / "ws")
        log = open(tmp_path / "killed-run.log", "wb")
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while len(cloud.requests) < 8 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)  # no cleanup, no chance to flush anything
        proc.wait(timeout=30)
        log.close()
        assert proc.returncode == -signal.SIGKILL, (tmp_path / "killed-run.log").read_text()
        cache = ResponseCache(out.parent / "cache.sqlite")
        answered = len(cache)
        cache.close()
        assert 1 <= answered < n
        asked_before = len(cloud.requests)
        cloud.reset()

        # the rerun (in-process: same code path, no second interpreter start)
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        assert main(cmd[3:]) == 0
        stdout = capsys.readouterr().out
        # nothing answered before the kill is asked again; only the rest (and the ones in flight)
        assert len(cloud.requests) == n - answered
        assert asked_before - answered <= 2  # at most `concurrency` were in flight at the kill
        rows = labels_of(out)
        assert sorted(r["id"] for r in rows) == sorted(f"p{i}" for i in range(n))
        assert sum(r["cached"] for r in rows) == answered
        assert all(r["label"].startswith("Reply: ") and r["teacher"] == "openai:gemini-1.5-pro" for r in rows)
        assert f"{n - answered} teacher calls, {answered} cache hits" in stdout

        cloud.reset()  # a finished run repeated makes zero calls
        assert main(cmd[3:]) == 0 and cloud.requests == []
        assert [r["label"] for r in labels_of(out)] == [r["label"] for r in rows]


def test_budget_cap_stops_cleanly_keeping_what_it_has(tmp_path, monkeypatch, capsys):
    pairs = write_pairs(tmp_path / "pairs.jsonl", 12)
    out = tmp_path / "out" / "labels.jsonl"
    with FaultyCloud() as cloud:
        for k, v in cloud_env(cloud, tmp_path / "ws").items():
            monkeypatch.setenv(k, v)
        # $1000 per million prompt tokens: each request costs cents, the cap allows a few
        rc = main(["distill", str(pairs), "-o", str(out), "--teacher", "openai", "--shots", "0", "--concurrency", "1",
                   "--budget", "0.1", "--price", "1000,0", "--no-progress"])
        err = capsys.readouterr()
        assert rc == 2
        assert "budget" in err.err and "labels saved" in err.err and "--budget" in err.err
        rows = labels_of(out)
        assert 0 < len(rows) < 12 and len(rows) == len(cloud.requests)
        cost = float(err.out.split("cost $")[1].split()[0])
        assert 0 < cost <= 0.1
        # raising the budget resumes: the labelled ones come from the cache
        cloud.reset()
        rc = main(["distill", str(pairs), "-o", str(out), "--teacher", "openai", "--shots", "0", "--concurrency", "1",
                   "--budget", "10", "--price", "1000,0", "--no-progress"])
        assert rc == 0 and len(labels_of(out)) == 12 and len(cloud.requests) == 12 - len(rows)


def test_failed_pairs_are_reported_not_labelled(tmp_path):
    pairs = read_pairs(write_pairs(tmp_path / "pairs.jsonl", 4))
    with FaultyCloud(script=["500", "500", "ok", "ok", "ok"]) as cloud:
        t = OpenAITeacher(require_gate=False, base_url=cloud.base_url, model="m", api_key="k", max_retries=1, backoff=0.001)
        labels, summary = distill(pairs, CachedTeacher(t, ResponseCache(tmp_path / "c.sqlite")), concurrency=1)
    assert [lab.id for lab in labels] == ["p1", "p2", "p3"]
    assert summary.failures and summary.failures[0][0] == "p0" and summary.calls == 3
    assert any("1 failed" in line for line in summary.lines())


def test_reference_distill_via_cli_states_the_shops_facts(tmp_path, zh_pack_dir):
    pairs = write_pairs(tmp_path / "pairs.jsonl", 10)
    out = tmp_path / "l" / "labels.jsonl"
    assert main(["distill", str(pairs), "-o", str(out), "--teacher", "reference", "--shop", str(zh_pack_dir), "--no-progress"]) == 0
    rows = [Label.from_json(r) for r in labels_of(out)]
    text = {r.id: r.label for r in rows}
    assert "中通" in text["p0"] and "8元" in text["p1"] and "16:00" in text["p2"] and "7天" in text["p3"]
    assert "19.9" in text["p7"] and "缺货" in text["p8"] and "7天" in text["p9"]
    assert all(r.teacher.startswith("reference") for r in rows)
    # a second run is all cache hits
    assert main(["distill", str(pairs), "-o", str(out), "--teacher", "reference", "--shop", str(zh_pack_dir), "--no-progress"]) == 0
    assert all(r["cached"] for r in labels_of(out))


def test_bad_input_fails_with_file_and_line(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "query": "x"}\n{"id": "a", "query": "y"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"bad.jsonl:2: duplicate id 'a'"):
        read_pairs(bad)
    assert main(["distill", str(bad), "-o", str(tmp_path / "o.jsonl"), "--teacher", "nope"]) == 2
    assert main(["distill", str(tmp_path / "o.jsonl"), "-o", str(tmp_path / "o.jsonl")]) == 2
    assert "file not found" in capsys.readouterr().err


def test_budget_with_unpriced_model_is_a_config_error(tmp_path, monkeypatch, capsys):
    pairs = write_pairs(tmp_path / "pairs.jsonl", 1)
    monkeypatch.setenv("ENDCLOUD_CLOUD_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("ENDCLOUD_CLOUD_MODEL", "my-own-model")
    monkeypatch.setenv("ENDCLOUD_CLOUD_API_KEY", "k")
    monkeypatch.delenv("ENDCLOUD_CLOUD_PRICE", raising=False)
    assert main(["distill", str(pairs), "-o", str(tmp_path / "o.jsonl"), "--teacher", "openai", "--budget", "1"]) == 2
    assert "--price" in capsys.readouterr().err


def test_cost_ledger_prices_are_configurable():
    ledger = CostLedger(prices=PriceTable({"x": (2.0, 4.0)}))
    from endcloud.records import Usage

    assert ledger.record("x", Usage(1_000_000, 500_000)) == pytest.approx(4.0)
    assert ledger.totals()["cost"] == pytest.approx(4.0)


def test_distill_help_lists_the_flags(capsys):
    assert main(["distill", "--help"]) == 0
    out = capsys.readouterr().out
    for flag in ("--teacher", "--shots", "--concurrency", "--budget", "--price", "--cache", "--examples"):
        assert flag in out


def test_teacher_ask_reference_and_cloud(tmp_path, zh_pack_dir, monkeypatch, capsys):
    assert main(["teacher", "ask", "纯棉方巾是什么材质的", "亲，纯棉的哦", "多少钱？", "--shop", str(zh_pack_dir)]) == 0
    out = capsys.readouterr()
    assert "19.9" in out.out and "reference" in out.err
    with FaultyCloud() as cloud:
        for k, v in cloud_env(cloud, tmp_path / "ws").items():
            monkeypatch.setenv(k, v)
        assert main(["teacher", "ask", "我的电话是13812345678，能发顺丰吗", "--teacher", "openai"]) == 0
        out = capsys.readouterr()
        assert out.out.strip() == "Reply: 我的电话是13812345678，能发顺丰吗"  # restored locally ...
        assert "13812345678" not in cloud.raw[0].decode()  # ... never sent
        assert (tmp_path / "ws" / "audit" / "outbound.jsonl").exists() and "gemini-1.5-pro" in out.err
