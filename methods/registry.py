"""The `Method` interface and the registry of methods.

A method is a `Method` subclass in its own file ``methods/<id>.py``::

    class SSR(Method):
        id = "ssr"
        description = "..."          # one line for `python -m repro ls methods`
        trains = True                # False only for the untrained reference row

        def build_targets(self, ctx: TargetContext) -> list[TargetRecord]: ...

and one line ``"<id>": "methods.<id>:<Class>"`` in `METHODS` below. Methods differ only in the targets they build:
every method is trained by the same core (methods.train) from the records it returns. The one exception is a
control: ``trained_tokens_of = "<other id>"`` trains for as many trained tokens as the other method's targets hold
(same optimiser, schedule shape and data order; more or fewer steps), so a difference in training budget can be
told apart from a difference in targets (methods/sft_matched.py).

The registry is an explicit map, not a scan of the package, so a helper module placed next to the methods is never
taken for one; imports are lazy, so naming a method does not load every other.
"""
from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from methods.targets import TargetContext, TargetRecord

#: method id -> "module:class"
METHODS: dict[str, str] = {
    "base": "methods.base:NoTraining",
    "sft": "methods.sft:SFT",
    "s3ft": "methods.s3ft:S3FT",
    "sdft": "methods.sdft:SDFT",
    "ssr": "methods.ssr:SSR",
    "self_only": "methods.self_only:SelfOnly",
    "sft_matched": "methods.sft_matched:TokenMatchedSFT",
}


class Method(ABC):
    """What every method provides. A subclass that leaves out `build_targets` or one of the class attributes cannot
    be instantiated (TypeError when the method is looked up, before any work)."""

    id: ClassVar[str]
    description: ClassVar[str]
    trains: ClassVar[bool]
    trained_tokens_of: ClassVar[str | None] = None     # a budget control: see the module docstring

    def __init__(self) -> None:
        missing = [a for a in ("id", "description", "trains") if not hasattr(self, a)]
        if missing:
            raise TypeError(f"method class {type(self).__name__} must set {', '.join(missing)}")
        ref = self.trained_tokens_of
        if ref is not None and (ref not in METHODS or ref == self.id):
            raise TypeError(f"method {self.id!r}: trained_tokens_of={ref!r} must name another registered method")

    @abstractmethod
    def build_targets(self, ctx: TargetContext) -> list[TargetRecord]:
        """The training targets of ``ctx.examples``, each made by ``ctx.target(ex, candidate)`` from a candidate
        the context provides (``ctx.predictions``, ``ctx.paraphrases``, ``ctx.gold``)."""


def method_ids() -> list[str]:
    return sorted(METHODS)


def get_method(method_id: str) -> Method:
    if method_id not in METHODS:
        raise KeyError(f"unknown method {method_id!r}; known: {', '.join(method_ids())}")
    module, name = METHODS[method_id].split(":")
    cls = getattr(importlib.import_module(module), name)
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise TypeError(f"{METHODS[method_id]} (method {method_id!r}) is not a Method subclass")
    if cls.id != method_id:
        raise TypeError(f"{METHODS[method_id]} has id {cls.id!r} but is registered as {method_id!r}")
    return cls()


def list_methods() -> dict[str, str]:
    return {m: get_method(m).description for m in method_ids()}
