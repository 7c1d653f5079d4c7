"""The results store: a Parquet dataset under results/<sweep>/, one file per finished cell.

Each file is written under a temporary name starting with '.' (which pyarrow's dataset reader
ignores) and atomically renamed, so a sweep killed at any moment — SIGKILL included — leaves only
whole cells; a rerun skips the finished ones. `pd.read_parquet(results/<sweep>)` reads it all.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

CELL_PREFIX = "cell-"
META_FILE = "_sweep.json"  # a leading "_" keeps pyarrow's dataset reader from reading it as data


class ResultsStore:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    def prepare(self, meta: Mapping[str, Any], fresh: bool = False) -> None:
        """Create the folder (emptied first with `fresh`) and record the sweep's config."""
        if fresh and self.root.exists():
            shutil.rmtree(self.root)
        self.root.mkdir(parents=True, exist_ok=True)
        for stale in self.root.glob(".*.tmp"):  # left by a run killed mid-write; never a finished cell
            stale.unlink()
        data = json.dumps(meta, indent=2, sort_keys=True).encode()
        meta_path = self.root / META_FILE
        if not meta_path.is_file() or meta_path.read_bytes() != data:  # unchanged: keep its mtime, so a
            self._atomic_write(meta_path, data)  # report built from these results stays up to date

    def finished(self) -> set[str]:
        """Cell ids with a complete file."""
        if not self.root.is_dir():
            return set()
        return {p.name[len(CELL_PREFIX):-len(".parquet")] for p in self.root.glob(f"{CELL_PREFIX}*.parquet")}

    def write(self, cell_id: str, row: Mapping[str, Any]) -> None:
        path = self.root / f"{CELL_PREFIX}{cell_id}.parquet"
        tmp = self.root / f".{path.name}.{os.getpid()}.tmp"
        pd.DataFrame([dict(row)]).to_parquet(tmp, index=False)
        os.replace(tmp, path)

    def read(self) -> pd.DataFrame:
        if not self.finished():
            raise FileNotFoundError(f"{self.root}: no finished cells")
        return pd.read_parquet(self.root)

    def meta(self) -> dict[str, Any]:
        return json.loads((self.root / META_FILE).read_text())

    @staticmethod
    def _atomic_write(path: Path, data: bytes) -> None:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
