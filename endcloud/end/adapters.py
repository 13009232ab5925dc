"""The adapter registry: versioned peft adapters of a shop, one active pointer, rollback.

    adapters/<name>/
      v1/  v2/  v3/        peft save_pretrained output + manifest.json
                           (version, parent, method, base, data_hash, metrics, created_at, status)
      active               one line, e.g. "v3", replaced atomically
      history.jsonl        every activate / rollback, appended
      .tmp-<pid>-*         a publish in progress (never listed, never active)
      .active.*.tmp        an atomic write of `active` in progress (fileio.atomic_write)

A version appears only by renaming a complete temp folder (files fsync'd, manifest last)
to `vN`, so a crash mid-publish leaves a `.tmp-*` folder and no half version; `active` is
written with an atomic rename, so a reader sees the old pointer or the new one. A version
folder without a readable manifest is listed as "incomplete" and cannot be activated.
A writer killed mid-way (kill -9) leaves its temp folder or file behind: `clean_leftovers`
removes those whose writer is gone (its pid is dead), or that are older than a minute when
the name does not say who wrote them, so a writer at work beside it is never broken. The
online loop calls it at start, and every publish does.

Statuses: "active" (what `active` points to), else the manifest's: "candidate" (published,
not yet judged), "rejected" (the gate said no), "rolled_back", or anything `mark` sets.

`ActiveWatcher` follows the `active` pointer from another process (a server following the
promotions of a separate `endcloud evolve`): it polls and calls `swap(folder)` on a change.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

from endcloud.errors import ConfigError, ModelError
from endcloud.fileio import fsync_path, write_json_atomic, write_text_atomic

log = logging.getLogger("endcloud.adapters")

MANIFEST = "manifest.json"
ACTIVE = "active"
HISTORY = "history.jsonl"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_VERSION = re.compile(r"^v(\d+)$")
# Training leftovers that do not belong in a published adapter.
_SKIP = ("checkpoints", ".losses.json", ".tmp-*")
_TMP_DIR = re.compile(r"^\.tmp-(?:(\d+)-)?")  # a publish's temp folder; new ones carry the writer's pid
LEFTOVER_AGE_S = 60.0  # a temp file or folder whose writer is unknown is a leftover once this old
_ALIVE_WRITER_MAX_S = 86400.0  # no publish takes a day: past that the pid has been reused


def _fsync_tree(root: Path) -> None:
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            fsync_path(os.path.join(dirpath, f))
        fsync_path(dirpath)


class AdapterRegistry:
    """Versioned adapters under `root` (a workspace's `adapters/` folder)."""

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root)

    # ---- names and versions -------------------------------------------------------
    @staticmethod
    def _check_name(name: str) -> str:
        if not isinstance(name, str) or not _NAME.match(name):
            raise ConfigError(
                f"adapter name must be letters, digits, '_', '-', '.' (up to 64, not starting with a dot), got {name!r}"
            )
        return name

    @staticmethod
    def version_str(version: str | int) -> str:
        """'v3', '3' or 3 -> 'v3'."""
        s = str(version).strip()
        if s.isdigit():
            s = f"v{int(s)}"
        if not _VERSION.match(s):
            raise ConfigError(f"adapter version must look like v3 (or 3), got {version!r}")
        return s

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and _NAME.match(p.name))

    def _dir(self, name: str) -> Path:
        return self.root / self._check_name(name)

    def versions(self, name: str) -> list[str]:
        """Every vN folder of `name`, oldest first (complete or not)."""
        d = self._dir(name)
        if not d.is_dir():
            return []
        vs = [p.name for p in d.iterdir() if p.is_dir() and _VERSION.match(p.name)]
        return sorted(vs, key=lambda v: int(v[1:]))

    def path(self, name: str, version: str | int) -> Path:
        return self._dir(name) / self.version_str(version)

    def manifest(self, name: str, version: str | int) -> dict[str, Any] | None:
        """The version's manifest, or None when it is missing or unreadable (an incomplete version)."""
        p = self.path(name, version)
        try:
            m = json.loads((p / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(m, dict) or not (p / "adapter_config.json").exists():
            return None
        return m

    # ---- publish ------------------------------------------------------------------
    def publish(
        self,
        name: str,
        src_dir: str | os.PathLike[str],
        *,
        manifest: dict[str, Any] | None = None,
        parent: str | int | None = None,
    ) -> str:
        """Copy a trained adapter in as the next version; return it ('v4'). Never activates it.

        The manifest gets `version, parent, method, base, data_hash, metrics, created_at,
        status="candidate"`; fields missing from `manifest` are read from the adapter's
        training.json when it has one."""
        d = self._dir(name)
        src = Path(src_dir)
        if not (src / "adapter_config.json").exists():
            raise ModelError(f"{str(src)!r} is not a peft adapter directory (no adapter_config.json); train one first")
        d.mkdir(parents=True, exist_ok=True)
        parent_v = self.version_str(parent) if parent is not None else None
        if parent_v is not None and self.manifest(name, parent_v) is None:
            raise ModelError(f"parent version {parent_v!r} of adapter {name!r} does not exist or is incomplete")
        record: dict[str, Any] = {}
        with contextlib.suppress(OSError, ValueError):
            record = json.loads((src / "training.json").read_text(encoding="utf-8"))
        self.clean_leftovers(name)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{os.getpid()}-", dir=d))  # the pid says whose it is
        try:
            shutil.copytree(src, tmp, dirs_exist_ok=True, ignore=shutil.ignore_patterns(*_SKIP, MANIFEST))
            m: dict[str, Any] = {
                "parent": parent_v,
                "method": record.get("method"),
                "base": record.get("base"),
                "data_hash": (record.get("data") or {}).get("train_hash"),
                "metrics": {k: v for k, v in (record.get("metrics") or {}).items() if k != "loss_curve"},
                "steps": record.get("steps"),
            }
            m.update(manifest or {})
            m["parent"] = parent_v if parent_v is not None else m.get("parent")
            m.setdefault("status", "candidate")
            if m.get("status") == "active":  # only the pointer makes a version active
                m["status"] = "candidate"
            m["created_at"] = m.get("created_at") or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            while True:
                existing = [int(v[1:]) for v in self.versions(name)]
                version = f"v{max(existing, default=0) + 1}"
                m["version"] = version
                write_json_atomic(tmp / MANIFEST, m)
                _fsync_tree(tmp)
                try:
                    os.rename(tmp, d / version)  # fails if another publisher took this number
                except OSError:
                    if (d / version).exists():
                        continue
                    raise
                break
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _fsync_tree(d)
        return version

    # ---- leftovers of killed writers ----------------------------------------------
    def clean_leftovers(self, name: str | None = None, *, max_age_s: float = LEFTOVER_AGE_S) -> list[Path]:
        """Remove what killed writers left under `name` (every name when None): publish temp
        folders (`.tmp-<pid>-*`) whose pid is dead, and temp files of atomic writes
        (`.active.*.tmp`, `.manifest.json.*.tmp` in a version) older than `max_age_s`.
        A live writer's temp is kept. Returns what was removed."""
        removed: list[Path] = []
        now = time.time()
        for n in [self._check_name(name)] if name else self.names():
            d = self._dir(n)
            if not d.is_dir():
                continue
            places = [d] + [p for p in d.iterdir() if p.is_dir() and _VERSION.match(p.name)]
            for place in places:
                for p in place.iterdir():
                    m = _TMP_DIR.match(p.name) if place is d else None
                    is_tmp_file = p.name.startswith(".") and p.name.endswith(".tmp")
                    if not (m or is_tmp_file):
                        continue
                    try:
                        age = now - p.lstat().st_mtime
                    except OSError:
                        continue  # gone meanwhile
                    pid = int(m.group(1)) if m and m.group(1) else None
                    if not _stale(pid, age, max_age_s):
                        continue
                    if p.is_dir() and not p.is_symlink():
                        shutil.rmtree(p, ignore_errors=True)
                    else:
                        with contextlib.suppress(OSError):
                            p.unlink()
                    if not p.exists():
                        removed.append(p)
                        log.info("removed a killed writer's leftover %s", p)
        return removed

    # ---- active pointer -----------------------------------------------------------
    def _read_active(self, name: str) -> str | None:
        p = self._dir(name) / ACTIVE
        try:
            v = p.read_text(encoding="utf-8").strip()
        except OSError:
            return None
        return v if _VERSION.match(v) else None

    def active_version(self, name: str) -> str | None:
        v = self._read_active(name)
        return v if v is not None and self.manifest(name, v) is not None else None

    def active(self, name: str) -> Path | None:
        """The folder of the active version of `name` (None when nothing is active)."""
        v = self.active_version(name)
        return self.path(name, v) if v else None

    def _history(self, name: str) -> list[dict[str, Any]]:
        p = self._dir(name) / HISTORY
        rows = []
        if p.exists():
            for line in p.read_text(encoding="utf-8").splitlines():
                with contextlib.suppress(ValueError):
                    rows.append(json.loads(line))
        return rows

    def _append_history(self, name: str, row: dict[str, Any]) -> None:
        p = self._dir(name) / HISTORY
        with open(p, "a", encoding="utf-8") as f:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def activate(self, name: str, version: str | int, *, force: bool = False) -> Path:
        """Point `active` at `version` (atomic); refuses incomplete versions, and rejected ones unless `force`."""
        v = self.version_str(version)
        m = self.manifest(name, v)
        if m is None:
            raise ModelError(
                f"adapter {name!r} has no complete version {v!r}; see `endcloud adapters list --name {name}`"
            )
        if m.get("status") == "rejected" and not force:
            raise ModelError(f"adapter {name!r} {v} was rejected; activate it with force=True if you are sure")
        previous = self._read_active(name)
        write_text_atomic(self._dir(name) / ACTIVE, v + "\n")
        self._append_history(name, {"action": "activate", "version": v, "previous": previous, "at": time.time()})
        return self.path(name, v)

    def _stack(self, name: str) -> list[str]:
        """Activation stack replayed from the history: activate pushes, rollback pops `pops` entries."""
        stack: list[str] = []
        for row in self._history(name):
            if row.get("action") == "activate":
                stack.append(row.get("version"))
            elif row.get("action") == "rollback":
                del stack[len(stack) - int(row.get("pops", 1)) :]
        return stack

    def rollback(self, name: str) -> str:
        """Re-activate the version that was active before the current one; return it.

        Repeated rollbacks walk further back; versions deleted since are skipped."""
        current = self._read_active(name)
        stack = self._stack(name)
        while stack and stack[-1] != current:  # the pointer was changed by hand: trust it
            stack.pop()
        below = [i for i, v in enumerate(stack[:-1]) if self.manifest(name, v) is not None]
        if current is None or not below:
            raise ModelError(f"adapter {name!r} has no earlier active version to roll back to")
        target = stack[below[-1]]
        write_text_atomic(self._dir(name) / ACTIVE, target + "\n")
        self._append_history(
            name,
            {"action": "rollback", "version": target, "previous": current, "pops": len(stack) - 1 - below[-1], "at": time.time()},
        )
        if self.manifest(name, current) is not None:
            self.mark(name, current, "rolled_back")
        return target

    # ---- status and listing -------------------------------------------------------
    def mark(self, name: str, version: str | int, status: str, **metrics: Any) -> dict[str, Any]:
        """Set a version's status ('candidate', 'rejected', …) and merge `metrics` into its manifest."""
        v = self.version_str(version)
        m = self.manifest(name, v)
        if m is None:
            raise ModelError(f"adapter {name!r} has no complete version {v!r}")
        if status == "active":
            raise ConfigError("status 'active' is set by activate(), not mark()")
        m["status"] = status
        if metrics:
            m["metrics"] = {**(m.get("metrics") or {}), **metrics}
        write_json_atomic(self.path(name, v) / MANIFEST, m)
        return m

    def list(self, name: str | None = None) -> list[dict[str, Any]]:
        """One row per version: name, version, parent, method, status, metrics, created_at, path."""
        rows = []
        for n in [self._check_name(name)] if name else self.names():
            active = self.active_version(n)
            for v in self.versions(n):
                m = self.manifest(n, v)
                if m is None:
                    rows.append({"name": n, "version": v, "parent": None, "method": None, "status": "incomplete",
                                 "metrics": {}, "created_at": None, "path": str(self.path(n, v))})
                    continue
                rows.append({
                    "name": n, "version": v, "parent": m.get("parent"), "method": m.get("method"),
                    "status": "active" if v == active else m.get("status", "candidate"),
                    "metrics": m.get("metrics") or {}, "created_at": m.get("created_at"),
                    "data_hash": m.get("data_hash"), "path": str(self.path(n, v)),
                })
        return rows


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (on this machine)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    except OSError:
        return False
    return True


def _stale(pid: int | None, age_s: float, max_age_s: float) -> bool:
    """A temp's writer is gone: its pid is dead (or is ours, so a previous life of this pid,
    and the temp is not fresh), or, with no pid to ask, the temp is older than `max_age_s`."""
    if pid is None:
        return age_s > max_age_s
    if pid == os.getpid():
        return age_s > max_age_s
    return not pid_alive(pid) or age_s > _ALIVE_WRITER_MAX_S


class ActiveWatcher:
    """Follow the registry's active version from another process: swap when it changes."""

    def __init__(self, registry: Any, name: str, swap: Callable[[Path | None], None], *, interval_s: float = 5.0):
        self.registry, self.name, self.swap, self.interval_s = registry, name, swap, interval_s
        self.current = registry.active_version(name)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="endcloud-adapter-watch", daemon=True)

    def poll(self) -> bool:
        v = self.registry.active_version(self.name)
        if v != self.current:
            self.swap(self.registry.active(self.name))
            self.current = v
            return True
        return False

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.poll()
            except Exception:
                log.exception("adapter watch failed")

    def start(self) -> "ActiveWatcher":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
