"""A/B experiments: deterministic variant assignment and per-variant overrides.

An experiment has weighted variants; a variant may override the note's ``template`` and/or
its delivery ``strategy`` (``operators.strategy``). A user's variant is a pure function of
``blake2b(experiment, tenant, user)`` mapped onto the cumulative weights, so the same user
always lands in the same variant, on every worker and after every restart, and no state is
kept. ``apply_experiments`` records the assignment as ``metadata["variant"] =
"<experiment>:<variant>"``, which every event carries (``operators.events.note_event`` and the
dispatcher read it).

Enrolment rules (so that variants stay comparable):

- an experiment applies when it is ``active`` and the note's tenant and category are in its
  scope (an empty ``tenants``/``categories`` list means any);
- a note takes part in at most one experiment, the first matching one in config order, and in
  none if it already carries a ``variant`` (set by the producer or a campaign);
- an experiment overriding ``template`` enrols only notes rendered from a template, and one
  overriding ``strategy`` only notes without an explicit per-request ``strategy``.

Config JSON (``ExperimentBook.from_dict``)::

    {"experiments": [
      {"name": "welcome-copy", "active": true, "tenants": ["acme"], "categories": ["onboarding"],
       "variants": [{"name": "control", "weight": 50},
                    {"name": "v2", "weight": 50, "template": "welcome_v2", "strategy": "smart"}]}
    ]}
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from operators.strategy_config import STRATEGIES

_SCALE = float(1 << 64)
_EXPERIMENT_KEYS = {"name", "active", "tenants", "categories", "variants"}
_VARIANT_KEYS = {"name", "weight", "template", "strategy"}


@dataclass(frozen=True, slots=True)
class Variant:
    name: str
    weight: float
    template: str | None = None
    strategy: str | None = None


@dataclass(frozen=True, slots=True)
class Experiment:
    name: str
    variants: tuple[Variant, ...]
    tenants: frozenset[str] = frozenset()  # empty: every tenant
    categories: frozenset[str] = frozenset()  # empty: every category
    active: bool = True

    def __post_init__(self) -> None:
        if not self.name or ":" in self.name:
            raise ValueError(f"experiment name must be non-empty without ':', got {self.name!r}")
        if not self.variants:
            raise ValueError(f"experiment {self.name!r}: no variants")
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names) or not all(names):
            raise ValueError(f"experiment {self.name!r}: variant names must be unique, non-empty")
        for variant in self.variants:
            if not isinstance(variant.weight, int | float) or not 0 <= variant.weight < 1e12:
                raise ValueError(f"experiment {self.name!r}: bad weight {variant.weight!r}")
            if variant.strategy is not None and variant.strategy not in STRATEGIES:
                raise ValueError(f"experiment {self.name!r}: unknown strategy {variant.strategy!r}")
            if variant.template is not None and not isinstance(variant.template, str):
                raise ValueError(f"experiment {self.name!r}: template must be a string")
        if sum(v.weight for v in self.variants) <= 0:
            raise ValueError(f"experiment {self.name!r}: weights sum to zero")

    @property
    def overrides_template(self) -> bool:
        return any(v.template for v in self.variants)

    @property
    def overrides_strategy(self) -> bool:
        return any(v.strategy for v in self.variants)

    def matches(self, note: Mapping[str, Any]) -> bool:
        """Whether ``note`` is enrolled (scope, active flag and the override rules above)."""
        return (
            self.active
            and (not self.tenants or note["tenant_id"] in self.tenants)
            and (not self.categories or note["category"] in self.categories)
            and not (self.overrides_template and not note.get("template"))
            and not (self.overrides_strategy and note.get("strategy"))
        )

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, where: str = "experiment") -> Experiment:
        if not isinstance(d, Mapping):
            raise ValueError(f"{where}: expected an object")
        unknown = set(d) - _EXPERIMENT_KEYS
        if unknown:
            raise ValueError(f"{where}: unknown keys {sorted(unknown)}")
        raw_variants = d.get("variants")
        if not isinstance(raw_variants, Sequence) or isinstance(raw_variants, str):
            raise ValueError(f"{where}: 'variants' must be a list")
        variants = []
        for i, v in enumerate(raw_variants):
            if not isinstance(v, Mapping) or set(v) - _VARIANT_KEYS or "name" not in v:
                raise ValueError(f"{where}.variants[{i}]: expected {{name, weight?, ...}}")
            variants.append(
                Variant(str(v["name"]), v.get("weight", 1), v.get("template"), v.get("strategy"))
            )
        return cls(
            name=str(d.get("name", "")),
            variants=tuple(variants),
            tenants=frozenset(d.get("tenants") or ()),
            categories=frozenset(d.get("categories") or ()),
            active=bool(d.get("active", True)),
        )


@dataclass(frozen=True, slots=True)
class ExperimentBook:
    experiments: tuple[Experiment, ...] = ()

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> ExperimentBook:
        """From ``{"experiments": [...]}``; raises ``ValueError`` naming the bad entry."""
        if not d:
            return cls()
        if not isinstance(d, Mapping) or set(d) - {"experiments"}:
            raise ValueError("experiments config: expected {'experiments': [...]}")
        raw = d.get("experiments") or []
        experiments = tuple(
            Experiment.from_dict(e, where=f"experiments[{i}]") for i, e in enumerate(raw)
        )
        names = [e.name for e in experiments]
        if len(set(names)) != len(names):
            raise ValueError("experiments config: experiment names must be unique")
        return cls(experiments)


def bucket_point(experiment: str, tenant: str, user: str) -> float:
    """A uniform point in [0, 1) for (experiment, tenant, user), stable across processes."""
    key = "\x1f".join((experiment, tenant, user)).encode()
    digest = hashlib.blake2b(key, digest_size=8, person=b"notiflow-ab").digest()
    return int.from_bytes(digest, "big") / _SCALE


def assign(experiment: Experiment, tenant: str, user: str) -> Variant:
    """The variant for ``user`` of ``tenant``: deterministic, proportional to the weights."""
    total = sum(v.weight for v in experiment.variants)
    point = bucket_point(experiment.name, tenant, user) * total
    cumulative = 0.0
    for variant in experiment.variants:
        cumulative += variant.weight
        if point < cumulative and variant.weight > 0:
            return variant
    return next(v for v in reversed(experiment.variants) if v.weight > 0)  # float rounding


def apply_experiments(note: dict[str, Any], book: ExperimentBook) -> dict[str, Any]:
    """``note`` unchanged if no experiment enrols it, else a new note with the variant's
    overrides applied and ``metadata["variant"] = "<experiment>:<variant>"``."""
    if not book.experiments or note["metadata"].get("variant"):
        return note
    for experiment in book.experiments:
        if experiment.matches(note):
            variant = assign(experiment, note["tenant_id"], note["user_id"])
            metadata = {**note["metadata"], "variant": f"{experiment.name}:{variant.name}"}
            updated = {**note, "metadata": metadata}
            if variant.template:
                updated["template"] = variant.template
            if variant.strategy:
                updated["strategy"] = variant.strategy
            return updated
    return note
