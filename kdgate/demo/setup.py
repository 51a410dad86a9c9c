"""What `make demo` serves: the distilled models, a deliberately bad student, traffic rows
and the gateway config of each rollout stage.

Pure helpers (``calibrated_gates``, ``stage_config``) build plain dicts; the rest reads and
writes files under the demo's model folder (``runs/demo`` by default).

Example::

    models = DemoModels.from_dir(pathlib.Path("runs/demo"))
    bad = make_bad_student(models, noise=0.6)           # runs/demo/student-bad.onnx
    config = stage_config(GOOD_STAGE, models, student_path=models.student, gates=gates,
                          workdir=tmp, token_file=tmp / "token")
"""
from __future__ import annotations

import json
import pathlib
from dataclasses import dataclass
from typing import Any

import numpy as np

MODEL_NAME = "mnist1d"
TEACHER_USD_PER_HOUR, STUDENT_USD_PER_HOUR = 0.40, 0.10


@dataclass(frozen=True)
class Stage:
    """One rollout of the demo: which student, through which steps."""

    key: str            # "good" | "bad"
    title: str
    variant: str        # the student's variant name in the gateway
    version: str
    steps: tuple        # rollout steps, e.g. ("shadow", 5, 25, 50, 100)
    expect: str         # the phase the demo waits for: Guarding (promoted) | RolledBack


GOOD_STAGE = Stage("good", "v1: distilled student", "student", "student-1", ("shadow", 5, 25, 50, 100), "Guarding")
# v2 goes straight to a live 5 % canary so the rollback visibly takes live traffic away.
BAD_STAGE = Stage("bad", "v2: corrupted student", "student-v2", "student-2", (5, 25, 50, 100), "RolledBack")


@dataclass(frozen=True)
class DemoModels:
    """Paths of the distilled artifacts the demo serves."""

    dir: pathlib.Path
    teacher: pathlib.Path
    student: pathlib.Path
    manifest: pathlib.Path
    traffic: pathlib.Path   # .npy of held-out test rows the load test sends

    @classmethod
    def from_dir(cls, folder: pathlib.Path) -> "DemoModels":
        return cls(folder, folder / "teacher.onnx", folder / "student.onnx", folder / "manifest.json",
                   folder / "demo-traffic.npy")

    def missing(self) -> list[str]:
        """Artifacts not on disk yet (empty: distillation can be skipped)."""
        return [p.name for p in (self.teacher, self.student, self.manifest, self.traffic) if not p.exists()]


def write_traffic_rows(config_path: pathlib.Path, models: DemoModels) -> int:
    """Save the distill config's held-out test rows as the load test's inputs; returns rows."""
    from distill.config import load_config
    from distill.data import load_dataset

    config = load_config(config_path)
    ds = load_dataset(config.data, seed=config.seed)
    np.save(models.traffic, ds.x_test.astype(np.float32))
    return int(len(ds.x_test))


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def offline_agreement(teacher: pathlib.Path, student: pathlib.Path, x: np.ndarray) -> dict[str, float]:
    """Top-1 agreement and mean KL(teacher || student) of two ONNX models on ``x``."""
    from distill.export import onnx_predict

    t, s = _softmax(onnx_predict(teacher, x)), _softmax(onnx_predict(student, x))
    kl = np.sum(t * (np.log(t + 1e-12) - np.log(s + 1e-12)), axis=1)
    return {"agreement": float(np.mean(t.argmax(1) == s.argmax(1))), "kl": float(kl.mean()), "rows": int(len(x))}


def perturb_onnx(src: pathlib.Path, dst: pathlib.Path, noise: float, seed: int = 0) -> pathlib.Path:
    """Copy of an ONNX model whose weight tensors get Gaussian noise of ``noise`` x their std.

    A stand-in for a corrupted export or a botched retraining: same graph, same inputs
    and outputs, plausibly shaped answers, but wrong ones.
    """
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(src))
    rng = np.random.default_rng(seed)
    for init in model.graph.initializer:
        w = numpy_helper.to_array(init)
        if w.dtype == np.float32 and w.ndim >= 2:
            noisy = w + rng.normal(scale=noise * float(w.std() or 1.0), size=w.shape).astype(np.float32)
            init.CopyFrom(numpy_helper.from_array(noisy, init.name))
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))
    return dst


def make_bad_student(models: DemoModels, noise: float = 0.3) -> tuple[pathlib.Path, dict[str, float]]:
    """``student-bad.onnx`` (a perturbed copy of the student) and its offline agreement."""
    bad = perturb_onnx(models.student, models.dir / "student-bad.onnx", noise)
    x = np.load(models.traffic)
    return bad, offline_agreement(models.teacher, bad, x)


def calibrated_gates(good: dict[str, float], margin: float = 0.06) -> dict[str, Any]:
    """Gate thresholds set from the distilled student's offline agreement with the teacher.

    The agreement gate's Wilson lower bound must reach ``margin`` below the agreement
    measured on the held-out test set, the KL gate allows 1.5x the offline KL plus 0.05
    nats: a student that serves like it tested passes, a clearly worse one fails.

    >>> calibrated_gates({"agreement": 0.9, "kl": 0.1})["agreement"]["min_lower_bound"]
    0.84
    """
    return {
        "agreement": {"min_lower_bound": round(max(0.5, good["agreement"] - margin), 3)},
        "kl": {"max_mean": round(1.5 * good["kl"] + 0.05, 3)},
        "latency": {"max_p99_s": 0.5, "max_ratio_to_teacher": 1.5},
        "input_drift": {"max_psi": 0.25},
        "cost": {"enabled": True, "max_ratio_to_teacher": 0.5},
    }


def stage_config(stage: Stage, models: DemoModels, *, student_path: pathlib.Path, gates: dict[str, Any],
                 workdir: pathlib.Path, token_file: pathlib.Path, interval_s: float = 6.0,
                 min_samples: int = 100) -> dict[str, Any]:
    """The gateway config of one stage: teacher + the stage's student + its rollout policy."""
    teacher = {"name": "teacher", "role": "teacher", "backend": "onnx", "model_path": str(models.teacher),
               "device": "cpu", "version": "teacher-1", "timeout_s": 2.0, "usd_per_hour": TEACHER_USD_PER_HOUR,
               "batching": {"enabled": True, "max_batch_size": 32, "wait_timeout_s": 0.002}}
    student = {"name": stage.variant, "role": "student", "backend": "onnx", "model_path": str(student_path),
               "manifest_path": str(models.manifest), "device": "cpu", "colocated": True,
               "version": stage.version, "timeout_s": 0.5, "usd_per_hour": STUDENT_USD_PER_HOUR}
    return {
        "model_name": MODEL_NAME, "task": "classification", "variants": [teacher, student],
        # Per-request split: the demo's handful of Locust users would make a sticky 5 % canary
        # all-or-nothing (each user stays on one variant); production configs keep x-user-id.
        "routing": {"weights": {"teacher": 100, stage.variant: 0}, "sticky_header": None},
        # Every request is compared: the teacher answers the student's in the background
        # and the student the teacher's, so each check has enough pairs at any weight.
        "shadow": {"fraction": 1.0, "canary_compare_fraction": 1.0, "queue_size": 256, "timeout_s": 2.0},
        "capture": {"enabled": True, "dir": str(workdir / f"capture-{stage.key}")},
        "admin": {"token_file": str(token_file)},
        "audit_log": str(workdir / "audit.jsonl"),
        "rollout": {
            "steps": list(stage.steps), "interval_s": interval_s, "min_samples": min_samples,
            "failure_threshold": 2, "deadline_s": 20 * interval_s, "gates": gates,
            "state_path": str(workdir / f"rollout-{stage.key}.sqlite"),
            "evidence_dir": str(workdir / "evidence"),
        },
    }


def write_json(path: pathlib.Path, data: Any) -> pathlib.Path:
    """``data`` as indented JSON (numpy values and NaN made JSON-safe)."""
    from distill.report import json_safe

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(json_safe(data), indent=2) + "\n")
    return path
