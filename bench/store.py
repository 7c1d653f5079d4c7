"""The results store: a Parquet dataset under results/<sweep>/, one file per finished cell.

Each file is written under a temporary name starting with '.' (which pyarrow's dataset reader
ignores) and atomically renamed, so a sweep killed at any moment — SIGKILL included — leaves only
whole cells; a rerun skips the finished ones. `pd.read_parquet(results/<sweep>)` reads it all.

What the store writes in its folder, and nothing else (`--fresh` deletes exactly these):

    cell-<cell_id>.parquet    one finished cell (one row)
    _failed-<cell_id>.json    a cell that raised: its identity and the error's one-line text
    _sweep.json               the resolved config and the planned cell ids
    .<name>.<pid>.tmp         a file being written (renamed into place when whole)
    .lock                     held (flock) by the one sweep running on the folder

pyarrow's dataset reader (and so `pd.read_parquet` of the folder) skips names starting with '.' or
'_' (its default `ignore_prefixes`), which is why the failure records, the config and the lock are
named that way. Every path the store writes or deletes is checked to be a direct child of the
store's folder, and a sweep's folder to lie strictly inside its results root, before anything is
touched: a sweep name can never reach a user's files.
"""

from __future__ import annotations

import errno
import json
import os
import re
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from envs.spec import ConfigError

CELL_PREFIX = "cell-"
CELL_SUFFIX = ".parquet"
FAILED_PREFIX = "_failed-"  # a leading "_": pyarrow's dataset reader never takes it for data
FAILED_SUFFIX = ".json"
META_FILE = "_sweep.json"  # a leading "_" keeps pyarrow's dataset reader from reading it as data
LOCK_FILE = ".lock"
TEMP_SUFFIX = ".tmp"
NULLABLE_DTYPES = {bool: "boolean", int: "Int64", float: "Float64", str: "string"}  # pandas dtypes with a null

# A sweep name becomes a folder name: letters, digits, '-', '_' and '.', not leading '.' (so never '.', '..'
# or a hidden folder), no separator. The length bound keeps cell file names under the usual 255-byte limit.
NAME_PATTERN = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}")
NAME_RULE = "letters, digits, '-', '_' and '.' (not first), at most 100 characters"
# The names the store writes (temporary files: '.' + a store name + '.<pid>.tmp').
_CELL = re.compile(rf"{CELL_PREFIX}([0-9a-f]+){re.escape(CELL_SUFFIX)}")
_FAILED = re.compile(rf"{FAILED_PREFIX}([0-9a-f]+){re.escape(FAILED_SUFFIX)}")
_TEMP = re.compile(rf"\.(?:{CELL_PREFIX}[0-9a-f]+{re.escape(CELL_SUFFIX)}|{FAILED_PREFIX}[0-9a-f]+"
                   rf"{re.escape(FAILED_SUFFIX)}|{re.escape(META_FILE)})\.\d+{re.escape(TEMP_SUFFIX)}")


def check_name(name: Any) -> str:
    """`name` if it is a plain sweep name (NAME_RULE), else ValueError."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise ValueError(f"expected a plain name ({NAME_RULE}), got {name!r}")
    return name


def is_store_file(name: str) -> bool:
    """Whether a file name is one the store writes (cells, failure records, the config, temporary files)."""
    return bool(name == META_FILE or _CELL.fullmatch(name) or _FAILED.fullmatch(name) or _TEMP.fullmatch(name))


def cell_file_id(name: str) -> str | None:
    match = _CELL.fullmatch(name)
    return match.group(1) if match else None


def failure_file_id(name: str) -> str | None:
    match = _FAILED.fullmatch(name)
    return match.group(1) if match else None


def _regular(path: Path) -> bool:
    """A regular file or a symlink (never followed: unlink and rename act on the link itself), not a folder."""
    try:
        return not path.is_dir() or path.is_symlink()
    except OSError:
        return False


class ResultsStore:
    """One sweep's folder. `results_root`, when given, is the folder the store must lie strictly inside
    (checked on the resolved paths, so a name like '..' or a symlink out of it is refused)."""

    def __init__(self, root: str | Path, results_root: str | Path | None = None):
        self.root = Path(root)
        self.results_root = None if results_root is None else Path(results_root)
        self._lock_fd: int | None = None

    @classmethod
    def for_sweep(cls, results_root: str | Path, name: str) -> "ResultsStore":
        """The store of sweep `name` under `results_root`; ConfigError for an unusable root or name."""
        results_root = Path(results_root)
        try:
            check_name(name)
        except ValueError as err:
            raise ConfigError(f"sweep name: {err}") from None
        if results_root.exists() and not results_root.is_dir():
            raise ConfigError(f"--results {results_root}: is not a folder")
        store = cls(results_root / name, results_root)
        store._check_root()
        return store

    # ------------------------------------------------------------------------------ path safety

    def _check_root(self) -> Path:
        """The store's folder, resolved; ConfigError unless it lies strictly inside the results root."""
        root = self.root.resolve()
        if self.results_root is not None:
            boundary = self.results_root.resolve()
            if boundary not in root.parents:
                raise ConfigError(f"{self.root}: resolves to {root}, not a folder inside the results root {boundary}; "
                                  "refusing to write or delete anything there")
        return root

    def _inside(self, path: Path) -> Path:
        """`path` if it is a direct child of the store's folder (its parent resolved, its name plain), else
        ConfigError. Symlinks are not followed for the file itself: unlink and rename act on the link."""
        if path.name in ("", ".", "..") or path.parent.resolve() != self._check_root():
            raise ConfigError(f"{path}: not a file of the results folder {self.root}; refusing to touch it")
        return path

    def _remove(self, path: Path) -> bool:
        """Delete one file the store wrote; False if it was already gone."""
        path = self._inside(path)
        if not is_store_file(path.name) and path.name != LOCK_FILE:
            raise ConfigError(f"{path}: not a file the results store writes; refusing to delete it")
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        return True

    # ------------------------------------------------------------------------------------ lock

    def lock(self) -> None:
        """Take the folder's lock (idempotent) or raise ConfigError naming the folder: two sweeps on one folder
        would compute every cell twice and delete each other's temporary files. flock is released by the
        kernel when the process dies (SIGKILL included), so a killed sweep never leaves a stale lock."""
        if self._lock_fd is not None:
            return
        import fcntl

        self._make_folder()
        path = self._inside(self.root / LOCK_FILE)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as err:
            raise ConfigError(f"{self.root}: cannot create its lock file ({err.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            holder = ""
            try:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            except OSError:
                pass
            os.close(fd)
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise ConfigError(f"{self.root}: another pgvar sweep{f' (pid {holder})' if holder else ''} is running "
                                  "on this results folder; wait for it to finish or stop it") from None
            raise ConfigError(f"{self.root}: cannot lock it ({err.strerror})") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None

    def __enter__(self) -> "ResultsStore":
        self.lock()
        return self

    def __exit__(self, *_: Any) -> None:
        self.release()

    def __del__(self) -> None:
        try:
            self.release()
        except Exception:  # noqa: BLE001 - at interpreter shutdown `os` may already be gone; the kernel unlocks
            pass

    # ---------------------------------------------------------------------------------- writing

    def _make_folder(self) -> None:
        self._check_root()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise ConfigError(f"{self.root}: exists and is not a folder") from None
        except OSError as err:
            raise ConfigError(f"{self.root}: cannot create the results folder ({err.strerror})") from None

    def prepare(self, meta: Mapping[str, Any], fresh: bool = False) -> int:
        """Lock and create the folder, with `fresh` first delete the files the store wrote there (never anything
        else), remove temporary files of killed runs, and record the sweep's config. Returns how many files
        `fresh` deleted. The lock comes first, so the clean-up can never delete a live sweep's file."""
        self.lock()
        entries = self._entries()
        blocked = [p.name for p in entries if is_store_file(p.name) and not _regular(p)]
        if blocked:
            raise ConfigError(f"{self.root / blocked[0]}: is a folder where the store keeps a file; move it away")
        deleted = 0
        try:
            for path in entries:
                if fresh and is_store_file(path.name):
                    deleted += self._remove(path)
                elif _TEMP.fullmatch(path.name):  # left by a run killed mid-write; never a finished cell
                    self._remove(path)
        except OSError as err:
            raise ConfigError(f"{self.root}: cannot delete {path.name} ({err.strerror or err})") from None
        data = json.dumps(meta, indent=2, sort_keys=True).encode()
        meta_path = self.root / META_FILE
        try:
            if not meta_path.is_file() or meta_path.read_bytes() != data:  # unchanged: keep its mtime, so a
                self._atomic_write(meta_path, data)  # report built from these results stays up to date
        except OSError as err:
            raise ConfigError(f"{meta_path}: cannot write it ({err.strerror or err})") from None
        return deleted

    def _entries(self) -> list[Path]:
        try:
            return sorted(self.root.iterdir())
        except FileNotFoundError:
            return []
        except OSError as err:
            raise ConfigError(f"{self.root}: cannot list it ({err.strerror})") from None

    def finished(self) -> set[str]:
        """Cell ids with a cell file (not read: `verify` reads them back)."""
        if not self.root.is_dir():
            return set()
        return {cell_id for p in self.root.glob(f"{CELL_PREFIX}*{CELL_SUFFIX}")
                if (cell_id := cell_file_id(p.name)) and p.is_file()}

    def cell_path(self, cell_id: str) -> Path:
        return self.root / f"{CELL_PREFIX}{cell_id}{CELL_SUFFIX}"

    def failure_path(self, cell_id: str) -> Path:
        return self.root / f"{FAILED_PREFIX}{cell_id}{FAILED_SUFFIX}"

    def write(self, cell_id: str, row: Mapping[str, Any], types: Mapping[str, type] | None = None) -> None:
        """Write one row as the cell's file. `types` (column → bool, int, float or str) gives the type of columns
        that may be None in a row: each is written as that type with a null (a bare None column would be of
        Parquet type null in this file and of another type in the next, and a folder read as one dataset takes
        its schema from one file), and reads back as the pandas nullable dtype (boolean, Int64, Float64, string)."""
        path = self._inside(self.cell_path(cell_id))
        tmp = self._inside(self.root / f".{path.name}.{os.getpid()}{TEMP_SUFFIX}")
        frame = pd.DataFrame([dict(row)])
        for column, kind in (types or {}).items():
            if column in frame:
                frame[column] = frame[column].astype(NULLABLE_DTYPES[kind])
        frame.to_parquet(tmp, index=False)
        os.replace(tmp, path)

    def record_failure(self, cell_id: str, record: Mapping[str, Any]) -> Path:
        """Write `_failed-<cell_id>.json` (the cell's identity and its error) atomically."""
        path = self._inside(self.failure_path(cell_id))
        self._atomic_write(path, json.dumps(dict(record), indent=2, sort_keys=True, default=str).encode())
        return path

    def clear_failure(self, cell_id: str) -> None:
        """A cell that succeeded on a rerun: its failure record is no longer true."""
        self._remove(self.failure_path(cell_id))

    def remove_cell(self, cell_id: str) -> None:
        self._remove(self.cell_path(cell_id))

    # ---------------------------------------------------------------------------------- reading

    def read_cell(self, cell_id: str):
        """One cell file read back whole with pyarrow → a pyarrow Table; ValueError (one line) unless it is a
        readable Parquet file of exactly one row whose `cell_id` is `cell_id`. Every reading error (a truncated or
        empty file, another format, a folder, permissions) becomes that ValueError."""
        import pyarrow.parquet as pq

        path = self.cell_path(cell_id)
        if path.is_dir():
            raise ValueError("is a folder, not a cell file")
        try:
            table = pq.read_table(path)
            ids = table.column("cell_id").to_pylist() if "cell_id" in table.column_names else None
        except Exception as err:  # noqa: BLE001 - pyarrow and the OS raise many types for a damaged file
            text = one_line(err).replace(f"'{path}'", path.name).replace(str(path), path.name)  # short: no full path
            raise ValueError(f"unreadable Parquet ({type(err).__name__}: {text})") from None
        if table.num_rows != 1:
            raise ValueError(f"holds {table.num_rows} rows; a cell file holds one")
        if ids != [cell_id]:
            raise ValueError("its cell_id column does not match its file name")
        return table

    def verify(self, cell_ids: set[str]) -> dict[str, str]:
        """Read back every given finished cell; {cell_id: why} for those that are not whole."""
        broken = {}
        for cell_id in sorted(cell_ids):
            try:
                self.read_cell(cell_id)
            except ValueError as err:
                broken[cell_id] = str(err)
        return broken

    def read(self) -> pd.DataFrame:
        if not self.finished():
            raise FileNotFoundError(f"{self.root}: no finished cells")
        return pd.read_parquet(self.root)

    def meta(self) -> dict[str, Any]:
        return json.loads((self.root / META_FILE).read_text(encoding="utf-8"))

    def _atomic_write(self, path: Path, data: bytes) -> None:
        path = self._inside(path)
        tmp = self._inside(path.with_name(f".{path.name}.{os.getpid()}{TEMP_SUFFIX}"))
        tmp.write_bytes(data)
        os.replace(tmp, path)


def one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text if len(text) <= 300 else text[:297] + "..."
