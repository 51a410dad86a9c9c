"""Which variant answers a request: weighted split, sticky users, sampling.

Sticky keys use weighted rendezvous hashing (Schindelhauer & Schomaker 2005): each
variant scores ``-w / ln(h(key, variant))`` with ``h`` uniform in (0, 1) and the
highest score wins. A key's scores depend only on the key, the variant and its weight,
so raising one variant's weight (and lowering the others') only ever moves keys *to*
it, never back and forth, and each variant gets a ``w / sum(w)`` share of keys.

The hash is blake2b, stable across processes and replicas (Python's ``hash()`` is
salted per process, so two replicas would disagree about a user).

Example::

    choose_variant({"teacher": 95, "student": 5}, sticky_key="user-42", draw=0.0)
    choose_variant({"teacher": 95, "student": 5}, sticky_key=None, draw=random.random())
"""
from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping

_HASH_SPACE = float(2**64)


def key_hash_unit(key: str, variant: str) -> float:
    """Stable hash of ``(key, variant)`` mapped uniformly into the open interval (0, 1)."""
    digest = hashlib.blake2b(f"{key}\x1f{variant}".encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "big") + 0.5) / _HASH_SPACE


def rendezvous_score(key: str, variant: str, weight: float) -> float:
    """Weighted rendezvous score of ``variant`` for ``key`` (higher wins; weight 0 never wins)."""
    if weight <= 0:
        return -math.inf
    return -weight / math.log(key_hash_unit(key, variant))


def choose_variant(weights: Mapping[str, float], *, sticky_key: str | None, draw: float) -> str:
    """Pick the variant for one request.

    With a ``sticky_key`` the choice is a pure function of the key and the weights
    (``draw`` is ignored); without one, ``draw`` in [0, 1) is placed on the cumulative
    weights in mapping order. Variants with weight 0 are never chosen.

    >>> choose_variant({"teacher": 100, "student": 0}, sticky_key="u1", draw=0.5)
    'teacher'
    >>> choose_variant({"teacher": 50, "student": 50}, sticky_key=None, draw=0.75)
    'student'
    """
    live = {name: float(w) for name, w in weights.items() if w > 0}
    if not live:
        raise ValueError("choose_variant needs at least one variant with a positive weight")
    if sticky_key is not None:
        return max(live, key=lambda name: (rendezvous_score(sticky_key, name, live[name]), name))
    target = draw * sum(live.values())
    cumulative = 0.0
    for name, weight in live.items():
        cumulative += weight
        if target < cumulative:
            return name
    return name  # draw rounding up to the total lands on the last live variant


def should_sample(fraction: float, draw: float) -> bool:
    """True for a ``fraction`` share of uniform draws in [0, 1).

    >>> should_sample(0.1, 0.05), should_sample(0.1, 0.5), should_sample(0.0, 0.0)
    (True, False, False)
    """
    return draw < fraction
