"""The meta-dataset: many small ``ways``-way image classification datasets, each a *recipe* — a source, a domain
and an ordered class subset — that rebuilds it exactly.

Seen datasets cross class subsets of the seen sources with the seen domains. Held-out datasets are never shown to
any part of the generator and come in three kinds, the three questions D2NWG's reviewers asked:

* ``unseen_combination`` — class subsets no seen dataset has, in a seen domain (interpolation in class space);
* ``unseen_domain`` — seen class subsets in a domain no seen dataset has (a shift of the inputs);
* ``unseen_source`` — a source no seen dataset came from (out of distribution for the dataset encoder).

Class order is random per dataset: row ``c`` of a dataset's head scores ``classes[c]`` of its source.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

__all__ = ["DatasetRecipe", "KINDS", "UNSEEN_KINDS", "plan_datasets", "dataset_name", "domain_seed"]

KINDS = ("seen", "unseen_combination", "unseen_domain", "unseen_source")
UNSEEN_KINDS = KINDS[1:]


def dataset_name(source: str, domain: str, classes: Sequence[int]) -> str:
    """The dataset's name: ``source.domain.c0-c1-…`` (safe as a file name; the class order is part of it)."""
    return f"{source}.{domain}.{'-'.join(str(int(c)) for c in classes)}"


def domain_seed(data_seed: int, source: str, domain: str) -> int:
    """The seed of a (source, domain) pair's random transform strengths (stable across Python runs)."""
    return int(data_seed) * 1_000_003 + zlib.crc32(f"{source}/{domain}".encode()) % 1_000_003


@dataclass(frozen=True)
class DatasetRecipe:
    """How to rebuild one dataset: images of ``classes`` (in this order) of ``source``, under ``domain``."""

    source: str
    domain: str
    classes: tuple[int, ...]
    kind: str = "seen"

    def __post_init__(self) -> None:
        object.__setattr__(self, "classes", tuple(int(c) for c in self.classes))
        if self.kind not in KINDS:
            raise ValueError(f"dataset kind {self.kind!r}: use one of {KINDS}")
        if len(set(self.classes)) != len(self.classes) or len(self.classes) < 2:
            raise ValueError(f"a dataset needs at least two distinct classes, got {list(self.classes)}")

    @property
    def name(self) -> str:
        """Unique name (source, domain and ordered classes)."""
        return dataset_name(self.source, self.domain, self.classes)

    @property
    def seen(self) -> bool:
        """Whether the generator may train on it."""
        return self.kind == "seen"

    def description(self, class_names: Sequence[str] | None = None) -> str:
        """One line for tables and the widget."""
        names = [class_names[c] if class_names else str(c) for c in self.classes]
        return f"{self.source} / {self.domain}: classes {', '.join(names)} ({self.kind.replace('_', ' ')})"

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON view."""
        return {"name": self.name, "source": self.source, "domain": self.domain, "classes": list(self.classes),
                "kind": self.kind}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DatasetRecipe":
        """Inverse of :meth:`to_dict` (the name is derived, not read)."""
        return cls(source=d["source"], domain=d["domain"], classes=tuple(d["classes"]), kind=d.get("kind", "seen"))


def _draw_subsets(rng: np.random.Generator, n_classes: int, ways: int, n: int, avoid: set[frozenset]) -> list[tuple]:
    """``n`` ordered class subsets whose *sets* are distinct from each other and from ``avoid``."""
    out: list[tuple] = []
    seen = set(avoid)
    for _ in range(10_000):
        if len(out) == n:
            return out
        c = tuple(int(k) for k in rng.permutation(n_classes)[:ways])
        if frozenset(c) not in seen:
            seen.add(frozenset(c))
            out.append(c)
    raise ValueError(f"cannot draw {n} distinct {ways}-class subsets of {n_classes} classes: lower the counts")


def plan_datasets(*, sources: Sequence[str], seen_domains: Sequence[str], unseen_domains: Sequence[str],
                  unseen_sources: Sequence[str], ways: int, n_combinations: int, n_unseen_combinations: int,
                  n_unseen_domain: int, n_unseen_source: int, seed: int, n_classes: int = 10
                  ) -> list[DatasetRecipe]:
    """Every dataset of the meta-dataset, seen ones first (deterministic in ``seed``).

    Per seen source: ``n_combinations`` class subsets × every seen domain (seen); ``n_unseen_combinations`` other
    subsets, each in one seen domain; ``n_unseen_domain`` seen subsets (re-ordered) in the unseen domains. Per unseen
    source: ``n_unseen_source`` subsets, each in one seen domain."""
    if not 2 <= ways <= n_classes:
        raise ValueError(f"ways={ways} must be in 2..{n_classes}")
    overlap = set(seen_domains) & set(unseen_domains)
    if overlap:
        raise ValueError(f"domains {sorted(overlap)} are both seen and unseen")
    if set(sources) & set(unseen_sources):
        raise ValueError(f"sources {sorted(set(sources) & set(unseen_sources))} are both seen and unseen")
    if not sources or not seen_domains:
        raise ValueError("the meta-dataset needs at least one seen source and one seen domain")
    rng = np.random.default_rng(seed)
    seen, unseen = [], []
    for source in sources:
        subsets = _draw_subsets(rng, n_classes, ways, n_combinations + n_unseen_combinations, set())
        train, held = subsets[:n_combinations], subsets[n_combinations:]
        seen += [DatasetRecipe(source, d, c) for c in train for d in seen_domains]
        unseen += [DatasetRecipe(source, seen_domains[int(rng.integers(len(seen_domains)))], c, "unseen_combination")
                   for c in held]
        if unseen_domains and train:
            for j in range(n_unseen_domain):
                c = train[j % len(train)]
                unseen.append(DatasetRecipe(source, unseen_domains[j % len(unseen_domains)],
                                            tuple(int(k) for k in rng.permutation(c)), "unseen_domain"))
    for source in unseen_sources:
        for c in _draw_subsets(rng, n_classes, ways, n_unseen_source, set()):
            unseen.append(DatasetRecipe(source, seen_domains[int(rng.integers(len(seen_domains)))], c,
                                        "unseen_source"))
    names = [r.name for r in seen + unseen]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:  # only possible when a re-ordering repeats a seen order in the same domain: never across domains
        raise ValueError(f"the plan names datasets twice ({dup[:3]}); change the seed")
    return seen + unseen
