"""The dashboard's guard and cost-saving queries, evaluated by promtool on synthetic series.

Costs are busy-time costs per inference (load-independent).

A promoted student serves 10 req/s; the teacher answers the guard's 25 % in shadow. The saving vs
teacher-only is what the teacher would cost for all 10 req/s minus what both variants cost now.
"""
from __future__ import annotations

import yaml
from test_ops_alerts_promtool import promtool

from kdgate.ops import promql as q
from kdgate.ops.dashboards import PANELS

MONTH = q.SECONDS_PER_MONTH
LABELS = 'model="m",application="kdgate"'


def _series() -> list[dict]:
    def requests(variant: str, route: str, per_minute: int) -> dict:
        return {"series": f'{q.REQUESTS}{{{LABELS},variant="{variant}",route="{route}",status="ok"}}',
                "values": f"0+{per_minute}x20"}

    def cost(variant: str, usd: float) -> dict:
        return {"series": f'{q.COST}{{{LABELS},variant="{variant}",method="busy"}}', "values": f"{usd}x20"}

    return [requests("student", "primary", 600), requests("teacher", "shadow", 150),
            cost("teacher", 0.001), cost("student", 0.0001),
            {"series": f'{q.ROLLOUT_PHASE}{{{LABELS},variant="student",phase="Guarding"}}', "values": "1x20"},
            {"series": f'{q.ROLLBACKS}{{{LABELS},variant="v0",reason="agreement"}}', "values": "1x20"}]


def _expr(panel_title: str, legend: str) -> str:
    panel = next(p for p in PANELS if p.title.startswith(panel_title))
    target = next(t for t in panel.targets if t.legend == legend)
    return target.expr.replace("$model", "m").replace("$__rate_interval", "5m")


def test_saving_vs_teacher_only_and_the_guard_panel_evaluate_to_the_expected_figures(tmp_path):
    teacher_only = 0.001 * 10 * MONTH
    now = 0.0001 * 10 * MONTH + 0.001 * 2.5 * MONTH     # the student's answers + the teacher's shadow share
    tests = {"rule_files": [], "evaluation_interval": "1m", "tests": [{
        "interval": "1m", "input_series": _series(),
        "promql_expr_test": [
            {"expr": _expr("Cost saving", "teacher-only"), "eval_time": "10m",
             "exp_samples": [{"labels": "{}", "value": teacher_only}]},
            {"expr": _expr("Cost saving", "saving"), "eval_time": "10m",
             "exp_samples": [{"labels": "{}", "value": teacher_only - now}]},
            {"expr": _expr("Guard", "{{variant}} guarding"), "eval_time": "10m",
             "exp_samples": [{"labels": '{variant="student"}', "value": 1}]},
            # Only a canary rollback so far: the guard-rollback series is there, at 0.
            {"expr": _expr("Guard", "{{variant}} guard rollbacks"), "eval_time": "10m",
             "exp_samples": [{"labels": '{variant="v0"}', "value": 0}]},
        ]}]}
    (tmp_path / "saving.yaml").write_text(yaml.safe_dump(tests, sort_keys=False))
    result = promtool("test", "rules", "saving.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert teacher_only - now > 0.6 * teacher_only   # 65 % saved at these prices
