"""A module imported by name but not run until it is used: `pgvar list` builds the registries of problems and
estimators, whose modules `import torch` at their top and use it only inside functions (no torch attribute is
read at import time: no `torch.float64` default, no `from torch.func import`), without torch's ≈ 1.3 s of import.

`importlib.util.LazyLoader` cannot do this on Python 3.11: a second `import torch` reads the lazy module's
`__spec__`, and any attribute read runs the module. The stand-in here is an empty module whose `__getattr__`
(called only for names it lacks, `__spec__` included) imports the real module and takes over its namespace, so a
use of torch after all is correct, only slower; tests/test_cli.py checks that `pgvar list` never makes one."""

from __future__ import annotations

import importlib
import sys
import types
from contextlib import contextmanager
from typing import Iterator


class _StandIn(types.ModuleType):
    def __getattr__(self, name: str):
        if sys.modules.get(self.__name__) is self:  # else the real module is imported already
            del sys.modules[self.__name__]
        real = importlib.import_module(self.__name__)
        self.__dict__.update(real.__dict__)  # later reads find the real attributes without this hook
        return getattr(real, name)


@contextmanager
def deferred_import(name: str) -> Iterator[None]:
    """Within the block, `import name` binds a stand-in that imports the real module at its first attribute read.
    No-op when the module is imported already; afterwards sys.modules holds the real module if it was imported,
    else nothing under that name (a later plain `import` imports the real one)."""
    if name in sys.modules:
        yield
        return
    stand_in = _StandIn(name)
    sys.modules[name] = stand_in
    try:
        yield
    finally:
        if sys.modules.get(name) is stand_in:
            del sys.modules[name]
