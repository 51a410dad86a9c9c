"""What a rollout transition asks the reconciler to do: actions as data (see ``machine``)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gateway.rollout.core.gates import GateResult
from gateway.rollout.core.observations import Window


@dataclass(frozen=True)
class SetWeights:
    """Set the live traffic split (percent per variant; other variants keep 0)."""

    weights: dict[str, float]
    reason: str


@dataclass(frozen=True)
class Notify:
    """Post ``payload`` (Alertmanager- and Slack-compatible JSON) to the webhook."""

    event: str
    payload: dict[str, Any]


@dataclass(frozen=True)
class WriteEvidence:
    """Write an evidence bundle (gate values over time, config, recent disagreements)."""

    kind: str  # rollback | promotion | abort
    reason: str
    at: float


@dataclass(frozen=True)
class RecordCheck:
    """Append one analysis check to the history (for evidence and the timeline)."""

    at: float
    phase: str
    step_index: int
    weight: float
    verdict: str
    decision: str
    gates: tuple[GateResult, ...]
    window: Window
    observations: dict[str, Any] = field(default_factory=dict)


Action = SetWeights | Notify | WriteEvidence | RecordCheck
