"""Load and validate a shop pack: the folder a shop brings (or `endcloud shop new` writes).

    <pack>/
      shop.yaml      name, language (zh|en), currency
      catalog.csv    sku,name,price,stock + any other column as an attribute
      faq.jsonl      {"question": ..., "answer": ...} per line            (optional)
      policies.md    "## " sections, each keyed by <!-- key: shipping -->  (optional)
      orders.csv     order_id,sku,status,courier,tracking_no,ship_date,eta_days (optional)

A real shop's export is messy, so loading is forgiving where that is harmless (a UTF-8
BOM, CRLF line ends, extra columns, header case and spaces, "¥129" prices) and precise
where it is not: every error is a `DataError` naming the file and the line (and column).

    pack = ShopPack.load("shop/")
    pack.products[0].price, pack.policies["shipping"], pack.orders.get("2024...")
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from endcloud.errors import DataError

LANGUAGES = ("zh", "en")
POLICY_KEYS = ("shipping", "delivery", "returns", "refunds", "coupons", "invoices", "after-sales")
CATALOG_REQUIRED = ("sku", "name", "price", "stock")
ORDER_COLUMNS = ("order_id", "sku", "status", "courier", "tracking_no", "ship_date", "eta_days")
DEFAULT_CURRENCY = {"zh": "CNY", "en": "USD"}

_KEY_COMMENT = re.compile(r"<!--\s*key\s*:\s*([A-Za-z0-9_\-]+)\s*-->")
# Header names a Chinese shop's export uses for the required columns.
COLUMN_ALIASES = {"商品编号": "sku", "货号": "sku", "商品id": "sku", "名称": "name", "商品名称": "name", "品名": "name",
                  "价格": "price", "售价": "price", "单价": "price", "库存": "stock", "库存数量": "stock", "订单号": "order_id"}
# Currency marks and thousands separators a spreadsheet export leaves in a price cell.
_PRICE_NOISE = re.compile(r"[¥￥$€£,\s]|元|RMB|CNY|USD", re.IGNORECASE)


def format_number(value: float) -> str:
    """A price as a shop writes it: 129, 39.9, 12.99 (no trailing zeros, no exponent)."""
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return text or "0"


@dataclass(slots=True)
class Product:
    """One catalog row. `attrs` holds every column beyond sku/name/price/stock, in file order."""

    sku: str
    name: str
    price: float
    stock: int
    attrs: dict[str, str] = field(default_factory=dict)

    @property
    def price_text(self) -> str:
        return format_number(self.price)

    @property
    def in_stock(self) -> bool:
        return self.stock > 0


@dataclass(slots=True)
class ShopPack:
    """A loaded shop pack. `policies` maps a key (from `<!-- key: -->`, else the heading)
    to the section's text; `policy_titles` maps the same key to the heading as written."""

    name: str
    language: str
    currency: str
    products: list[Product]
    faq: list[tuple[str, str]]
    policies: dict[str, str]
    orders: dict[str, dict[str, str]] = field(default_factory=dict)
    policy_titles: dict[str, str] = field(default_factory=dict)
    path: Path | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | Path) -> "ShopPack":
        """Read and validate the pack folder at `path` (raises DataError naming file:line)."""
        root = Path(path)
        if not root.is_dir():
            raise DataError("shop pack folder not found; create one with `endcloud shop new OUT`", path=str(root))
        meta = _load_yaml(root / "shop.yaml")
        name = meta.get("name")
        if not isinstance(name, str) or not name.strip():
            raise DataError(f"`name` must be a non-empty string, got {name!r}", path=str(root / "shop.yaml"))
        language = str(meta.get("language", "zh")).strip().lower()
        if language not in LANGUAGES:
            raise DataError(f"`language` must be one of {', '.join(LANGUAGES)}, got {meta.get('language')!r}", path=str(root / "shop.yaml"))
        currency = str(meta.get("currency") or DEFAULT_CURRENCY[language]).strip()
        products = load_catalog(root / "catalog.csv")
        faq = load_faq(root / "faq.jsonl") if (root / "faq.jsonl").exists() else []
        policies: dict[str, str] = {}
        titles: dict[str, str] = {}
        if (root / "policies.md").exists():
            policies, titles = load_policies(root / "policies.md")
        orders = load_orders(root / "orders.csv") if (root / "orders.csv").exists() else {}
        return cls(
            name=name.strip(), language=language, currency=currency, products=products, faq=faq,
            policies=policies, orders=orders, policy_titles=titles, path=root, meta=meta,
        )

    def knowledge_text(self) -> str:
        """Everything the pack knows, as one text (what a fact must be found in)."""
        parts: list[str] = []
        for p in self.products:
            parts.append(" ".join([p.sku, p.name, p.price_text, str(p.stock), *p.attrs.values()]))
        parts.extend(f"{q}\n{a}" for q, a in self.faq)
        parts.extend(f"{self.policy_titles.get(k, k)}\n{t}" for k, t in self.policies.items())
        parts.extend(" ".join(row.values()) for row in self.orders.values())
        return "\n".join(parts)


def _read_text(path: Path) -> str:
    if not path.exists():
        raise DataError("file not found", path=str(path))
    try:
        # utf-8-sig drops a BOM that Excel and Windows tools put first.
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = path.read_bytes()[: e.start].count(b"\n") + 1
        raise DataError(f"not valid UTF-8 (byte {e.start}); save the file as UTF-8", path=str(path), line=line) from None


def _load_yaml(path: Path) -> dict[str, Any]:
    text = _read_text(path)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        col = f" (column {mark.column + 1})" if mark is not None else ""
        raise DataError(f"bad YAML: {problem}{col}", path=str(path), line=line) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise DataError(f"expected a mapping (name:, language:, currency:), got {type(data).__name__}", path=str(path), line=1)
    return data


def _csv_rows(path: Path, required: tuple[str, ...]) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Header (normalised: stripped, lower-case) and (line number, cells) per data row."""
    text = _read_text(path)
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise DataError(f"empty file; expected a header row with {','.join(required)}", path=str(path), line=1) from None
    except csv.Error as e:
        raise DataError(f"bad CSV: {e}", path=str(path), line=reader.line_num) from None
    columns = [COLUMN_ALIASES.get(c.strip().lower(), c.strip().lower()) for c in header]
    missing = [c for c in required if c not in columns]
    if missing:
        raise DataError(
            f"missing required column(s) {', '.join(missing)}; the header is {','.join(header)!r} "
            f"and must include {','.join(required)}",
            path=str(path), line=1,
        )
    seen: set[str] = set()
    for c in columns:
        if c and c in seen:
            raise DataError(f"column {c!r} appears twice in the header", path=str(path), line=1)
        seen.add(c)
    rows: list[tuple[int, list[str]]] = []
    try:
        for cells in reader:
            if not any(c.strip() for c in cells):
                continue
            if len(cells) > len(columns):
                raise DataError(
                    f"{len(cells)} fields but the header has {len(columns)}; quote cells that contain commas",
                    path=str(path), line=reader.line_num,
                )
            cells = [c.strip() for c in cells] + [""] * (len(columns) - len(cells))
            rows.append((reader.line_num, cells))
    except csv.Error as e:
        raise DataError(f"bad CSV: {e}", path=str(path), line=reader.line_num) from None
    return columns, rows


def load_catalog(path: str | Path) -> list[Product]:
    """catalog.csv -> products; every column other than sku,name,price,stock is an attribute."""
    path = Path(path)
    columns, rows = _csv_rows(path, CATALOG_REQUIRED)
    idx = {c: i for i, c in enumerate(columns)}
    extra = [(i, c) for i, c in enumerate(columns) if c and c not in CATALOG_REQUIRED]
    products: list[Product] = []
    skus: dict[str, int] = {}
    for line, cells in rows:
        sku, name = cells[idx["sku"]], cells[idx["name"]]
        for col in ("sku", "name"):
            if not cells[idx[col]]:
                raise DataError(f"empty {col} (column {idx[col] + 1})", path=str(path), line=line)
        if sku in skus:
            raise DataError(f"duplicate sku {sku!r} (first on line {skus[sku]})", path=str(path), line=line)
        skus[sku] = line
        raw_price = cells[idx["price"]]
        try:
            price = float(_PRICE_NOISE.sub("", raw_price))
        except ValueError:
            raise DataError(f"price must be a number, got {raw_price!r} (column {idx['price'] + 1}, 'price')", path=str(path), line=line) from None
        if not math.isfinite(price) or price < 0:
            raise DataError(f"price must be a finite number >= 0, got {raw_price!r} (column {idx['price'] + 1}, 'price')", path=str(path), line=line)
        raw_stock = cells[idx["stock"]]
        try:
            stock = int(float(raw_stock.replace(",", ""))) if raw_stock else 0
        except ValueError:
            raise DataError(f"stock must be a whole number, got {raw_stock!r} (column {idx['stock'] + 1}, 'stock')", path=str(path), line=line) from None
        attrs = {c: cells[i] for i, c in extra if cells[i]}
        products.append(Product(sku=sku, name=name, price=price, stock=stock, attrs=attrs))
    return products


def load_faq(path: str | Path) -> list[tuple[str, str]]:
    """faq.jsonl -> [(question, answer)]; a bad line names file and line."""
    path = Path(path)
    text = _read_text(path)
    faq: list[tuple[str, str]] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"not valid JSON ({e.msg} at column {e.colno}); one object per line", path=str(path), line=lineno) from None
        if not isinstance(obj, dict):
            raise DataError(f"expected a JSON object, got {type(obj).__name__}", path=str(path), line=lineno)
        q, a = obj.get("question"), obj.get("answer")
        if not isinstance(q, str) or not q.strip() or not isinstance(a, str) or not a.strip():
            raise DataError(f'expected non-empty "question" and "answer" strings, got keys {sorted(obj)}', path=str(path), line=lineno)
        faq.append((q.strip(), a.strip()))
    return faq


def load_policies(path: str | Path) -> tuple[dict[str, str], dict[str, str]]:
    """policies.md -> ({key: text}, {key: heading}); key from `<!-- key: x -->`, else the heading."""
    path = Path(path)
    text = _read_text(path)
    policies: dict[str, str] = {}
    titles: dict[str, str] = {}
    lines: dict[str, int] = {}
    heading: str | None = None
    heading_line = 0
    body: list[str] = []

    def close() -> None:
        if heading is None:
            return
        joined = "\n".join(body)
        m = _KEY_COMMENT.search(joined)
        key = m.group(1).strip().lower() if m else heading.strip().lower()
        content = _KEY_COMMENT.sub("", joined).strip()
        if key in policies:
            raise DataError(f"policy key {key!r} appears twice (first on line {lines[key]})", path=str(path), line=heading_line)
        policies[key], titles[key], lines[key] = content, heading, heading_line

    for lineno, line in enumerate(text.splitlines(), 1):
        if line.startswith("## "):
            close()
            heading, heading_line, body = line[3:].strip(), lineno, []
        elif heading is not None:
            body.append(line)
    close()
    return policies, titles


def load_orders(path: str | Path) -> dict[str, dict[str, str]]:
    """orders.csv -> {order_id: row}; only order_id is required, other columns are kept as read."""
    path = Path(path)
    columns, rows = _csv_rows(path, ("order_id",))
    orders: dict[str, dict[str, str]] = {}
    first: dict[str, int] = {}
    for line, cells in rows:
        row = {c: v for c, v in zip(columns, cells) if c}
        oid = row["order_id"]
        if not oid:
            raise DataError(f"empty order_id (column {columns.index('order_id') + 1})", path=str(path), line=line)
        if oid in orders:
            raise DataError(f"duplicate order_id {oid!r} (first on line {first[oid]})", path=str(path), line=line)
        orders[oid], first[oid] = row, line
    return orders
