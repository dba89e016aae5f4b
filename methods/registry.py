"""Registry of methods. A method is one module in ``methods/`` that defines

    DESCRIPTION: str             # one line for `python -m repro ls methods`
    TRAINS: bool                 # False only for the untrained reference row
    def build_targets(ctx: methods.targets.TargetContext) -> list[TargetRecord]

Its id is the module name. Adding a method is adding one file; nothing else in the suite changes, because every
method is trained by the same core (methods.train) from the records it returns.
"""
from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

import methods

#: Modules of the package that are machinery, not methods.
_INFRASTRUCTURE = {"registry", "targets", "train"}


def method_ids() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(methods.__path__)
                  if not m.name.startswith("_") and m.name not in _INFRASTRUCTURE)


def get_method(method_id: str) -> ModuleType:
    if method_id not in method_ids():
        raise KeyError(f"unknown method {method_id!r}; known: {', '.join(method_ids())}")
    module = importlib.import_module(f"methods.{method_id}")
    for attr in ("DESCRIPTION", "TRAINS", "build_targets"):
        if not hasattr(module, attr):
            raise TypeError(f"methods/{method_id}.py must define {attr}")
    return module


def list_methods() -> dict[str, str]:
    return {m: get_method(m).DESCRIPTION for m in method_ids()}
