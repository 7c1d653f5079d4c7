"""One torch thread for a block of work: numbers that must not depend on who runs them (a QR's, a cell's), and small
per-step ops that intra-op threads only slow down."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch


@contextmanager
def single_thread() -> Iterator[None]:
    """Run the block with one torch intra-op thread, restoring the count afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
