"""The webhook body a rollout posts on a phase change: Alertmanager- and Slack-compatible JSON."""
from __future__ import annotations

import datetime as dt
from typing import Any

SEVERITY = {"rolled_back": "critical", "guard_rolled_back": "critical", "aborted": "warning"}
RESOLVED_EVENTS = frozenset({"promoted", "resumed", "guarding"})  # guarding: the stable student watched again


def _rfc3339(epoch_s: float) -> str:
    return dt.datetime.fromtimestamp(epoch_s, tz=dt.timezone.utc).isoformat().replace("+00:00", "Z")


def notification(status: dict[str, Any], *, event: str, summary: str, now: float) -> dict[str, Any]:
    """Webhook body readable by Alertmanager receivers (``alerts``, ``status``) and Slack (``text``).

    >>> body = notification({"student": "s", "teacher": "t", "phase": "RolledBack", "weight": 0.0},
    ...                     event="rolled_back", summary="agreement failed", now=0.0)
    >>> body["alerts"][0]["labels"]["alertname"], body["text"][:31]
    ('KdgateRolloutRolledBack', ':rotating_light: kdgate rollout')
    """
    severity = SEVERITY.get(event, "info")
    state = "resolved" if event in RESOLVED_EVENTS else "firing"
    alertname = "KdgateRollout" + "".join(part.capitalize() for part in event.split("_"))
    labels = {"alertname": alertname, "severity": severity, "variant": status["student"],
              "teacher": status["teacher"], "stable": status.get("stable") or status["teacher"],
              "phase": status["phase"]}
    icon = {"critical": ":rotating_light:", "warning": ":warning:"}.get(severity, ":information_source:")
    text = (f"{icon} kdgate rollout of {status['student']} ({event}): {summary} "
            f"[phase {status['phase']}, stable {labels['stable']}, student weight {status['weight']:g} %]")
    alert = {"status": state, "labels": labels,
             "annotations": {"summary": summary, "description": text},
             "startsAt": _rfc3339(now), "endsAt": _rfc3339(now) if state == "resolved" else "0001-01-01T00:00:00Z",
             "generatorURL": "", "fingerprint": f"kdgate-{status['student']}-{event}"}
    return {"version": "4", "groupKey": f"kdgate-rollout-{status['student']}", "status": state,
            "receiver": "kdgate", "groupLabels": {"alertname": alertname}, "commonLabels": labels,
            "commonAnnotations": alert["annotations"], "externalURL": "", "alerts": [alert],
            "text": text, "kdgate": {"event": event, "status": status}}
