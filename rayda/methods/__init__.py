"""Adaptation methods: each one a `Method` class run by the one training loop."""
from __future__ import annotations

from rayda.config import ConfigError
from rayda.methods.base import Method, StepContext, unwrap
from rayda.methods.csa import CSA
from rayda.methods.cycleplus import CyclePlus
from rayda.methods.gio_ada import GIOAda
from rayda.methods.lsd import LSD
from rayda.methods.source_only import SourceOnly
from rayda.methods.unit import UNIT

METHODS: dict[str, type[Method]] = {m.name: m for m in (SourceOnly, CyclePlus, UNIT, GIOAda, CSA, LSD)}


def method_class(name: str) -> type[Method]:
    if name not in METHODS:
        raise ConfigError(f"'method.name': unknown method {name!r}; known: {', '.join(sorted(METHODS))}")
    return METHODS[name]


__all__ = ["METHODS", "Method", "StepContext", "method_class", "unwrap"]
