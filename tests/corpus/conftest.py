"""Small chat-log files in each format, written here (never copied from ../shared/data)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

# JDDC: 7 tab fields. Session s1 opens with a routing line, has a NULL, a system notice,
# a same-speaker run, a content with a tab, CRLF on one line, and both masking styles.
JDDC_LINES = [
    "s1\tUSERID_1\t0\t0\t0\tnan\t人工客服 京东快递(移动端) 你好",
    "s1\tUSERID_1\t1\t0\t0\tnan\t有什么问题我可以帮您处理或解决呢?",
    "s1\tUSERID_1\t0\t0\t0\tnan\t我的订单[ORDERID_10005629]到哪了",
    "s1\tUSERID_1\t0\t0\t0\tnan\t4**号能到吗",
    "s1\tUSERID_1\t0\t0\t0\tnan\tNULL",
    "s1\tUSERID_1\t1\t0\t0\tnan\t系统提示：客服已接入",
    "s1\tUSERID_1\t1\t0\t0\tnan\t[订单x]已经到[站点x]了\t明天送达\r",
    "s1\tUSERID_1\t0\t0\t0\tnan\t好的 谢谢 #E-s[数字x]",
    "s1\tUSERID_1\t1\t0\t0\t3527967\t不客气，祝您生活愉快",
    "s2\tUSERID_2\t0\t0\t0\tnan\t这个点还有人工客服…意外",
    "s2\tUSERID_2\t1\t0\t0\tnan\t亲，在的",
]

ECD_LINES = [
    "1\t嗯 嗯\t因为 买二送 一是 坚果 类产品 呢\t没事\t打 95 折 的 商品 , EMS 快递 哦",
    "0\t嗯 嗯\t因为 买二送 一是 坚果 类产品 呢\t没事\t放 尿布 里面 的 吗",
    "1\t亲 在\t您好",
    "0\t亲 在\t不 知道",
    "1\tdo you ship to Beijing\tyes we ship with EMS\tthanks\tyou are welcome",
]

JSONL_ROWS = [
    {"id": "c1", "messages": [
        {"role": "system", "content": "You are a shop assistant."},
        {"role": "user", "content": "Do you have the red towel?"},
        {"role": "assistant", "content": "Yes, 20 in stock, 9.90 each.", "intent": "stock", "facts": ["20", "9.90"]},
        {"role": "user", "content": "Shipping?"},
        {"role": "assistant", "content": "ZTO by default."},
    ]},
    {"messages": [{"role": "user", "content": "在吗"}, {"role": "assistant", "content": "在的亲"}]},
]

CSV_TEXT = (
    "role,conversation_id,text,extra\n"
    "customer,k1,\"hello, is this in stock?\",x\n"
    "agent,k1,\"yes\nit is\",x\n"
    "0,k2,你好,x\n"
    "1,k2,您好,x\n"
    "1,k2,请问有什么可以帮您,x\n"
)


def write_lines(path: Path, lines: list[str], newline: str = "\n") -> Path:
    path.write_bytes((newline.join(lines) + newline).encode("utf-8"))
    return path


@pytest.fixture
def jddc_file(tmp_path: Path) -> Path:
    return write_lines(tmp_path / "chats.txt", JDDC_LINES)


@pytest.fixture
def ecd_file(tmp_path: Path) -> Path:
    return write_lines(tmp_path / "ecd_train.txt", ECD_LINES)


@pytest.fixture
def jsonl_file(tmp_path: Path) -> Path:
    return write_lines(tmp_path / "chats.jsonl", [json.dumps(r, ensure_ascii=False) for r in JSONL_ROWS])


@pytest.fixture
def csv_file(tmp_path: Path) -> Path:
    p = tmp_path / "chats.csv"
    p.write_text(CSV_TEXT, encoding="utf-8")
    return p


@pytest.fixture
def read_jsonl():
    def read(path: Path) -> list[dict]:
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]

    return read
