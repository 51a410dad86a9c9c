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
    """One chapter of the demo: which student is the candidate, through which steps, on what traffic."""

    key: str            # "v1" | "v2" | "drift" | "v3"
    title: str
    variant: str        # the candidate's variant name in the gateway
    version: str
    steps: tuple        # rollout steps, e.g. ("shadow", 5, 25, 50, 100)
    expect: str         # the phase the demo waits for: Guarding (promoted) | RolledBack
    expect_stable: str  # the stable variant the stage should end with
    serving: str = "teacher"   # what the deployed file routes to (the rollout's stored split wins)
    others: tuple = ()         # students deployed beside the candidate (e.g. the stable v1 under v2)
    drift: str = "none"        # none | after_guard (healthy, then drifted) | always
    input_drift_gate: bool = True


# v2 goes straight to a live 5 % canary so the rollback visibly takes live traffic away from v1.
V1_STAGE = Stage("v1", "v1: distilled student", "v1", "v1", ("shadow", 5, 25, 50, 100), "Guarding", "v1")
V2_STAGE = Stage("v2", "v2: corrupted candidate", "v2", "v2", (5, 25, 50, 100), "RolledBack", "v1",
                 serving="v1", others=("v1",))
# The file names the stable v1 again (v2 removed): v1 is guarded, then the inputs drift.
DRIFT_STAGE = Stage("drift", "v1 guarded: input drift", "v1", "v1", ("shadow", 5, 25, 50, 100), "RolledBack",
                    "teacher", serving="v1", drift="after_guard")
# v3 learned the drifted inputs; its manifest's reference is still v1's training data, which the
# drifted traffic no longer resembles, so its input-drift gate is off (agreement still judges it,
# calibrated like v1's: on its own offline agreement, here on drifted held-out rows).
V3_STAGE = Stage("v3", "v3: re-distilled on the captured drift", "v3", "v3", (5, 50, 100), "Guarding", "v3",
                 drift="always", input_drift_gate=False)
STAGES = (V1_STAGE, V2_STAGE, DRIFT_STAGE, V3_STAGE)
DRIFT_STD = 1.0     # the drift: every 2nd feature moves by this many standard deviations


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


def shift_features(x, std: float, every: int = 2) -> np.ndarray:
    """Input drift: every ``every``-th feature of ``x`` moved by ``std`` x that feature's standard deviation.

    >>> shift_features([[0.0, 0.0], [2.0, 2.0]], 1.0).tolist()
    [[1.0, 0.0], [3.0, 2.0]]
    """
    x = np.array(x, dtype=np.float32)
    x[:, ::every] += std * x[:, ::every].std(axis=0)
    return x


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def offline_agreement(teacher: pathlib.Path, student: pathlib.Path, x: np.ndarray) -> dict[str, float]:
    """Top-1 agreement and mean KL(teacher || student) of two ONNX models on ``x`` (features or token ids)."""
    from distill.export import onnx_predict

    dtype = np.int64 if np.issubdtype(np.asarray(x).dtype, np.integer) else np.float32   # token ids or features
    t, s = _softmax(onnx_predict(teacher, x, dtype=dtype)), _softmax(onnx_predict(student, x, dtype=dtype))
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


def _variant(name: str, role: str, path: pathlib.Path, version: str, models: DemoModels,
             manifest: pathlib.Path | None = None, timeout_s: float = 2.0) -> dict[str, Any]:
    if role == "teacher":
        return {"name": name, "role": role, "backend": "onnx", "model_path": str(path), "device": "cpu",
                **({"manifest_path": str(manifest)} if manifest else {}), "version": version,
                "timeout_s": timeout_s, "usd_per_hour": TEACHER_USD_PER_HOUR,
                "batching": {"enabled": True, "max_batch_size": 32, "wait_timeout_s": 0.002}}
    return {"name": name, "role": role, "backend": "onnx", "model_path": str(path),
            "manifest_path": str(manifest or models.manifest), "device": "cpu", "colocated": True,
            "version": version, "timeout_s": 0.5, "usd_per_hour": STUDENT_USD_PER_HOUR}


def stage_config(stage: Stage, models: DemoModels, *, students: dict[str, pathlib.Path], gates: dict[str, Any],
                 workdir: pathlib.Path, token_file: pathlib.Path, interval_s: float = 6.0, min_samples: int = 100,
                 guard: dict[str, Any] | None = None, manifests: dict[str, pathlib.Path] | None = None,
                 model_name: str = MODEL_NAME, teacher_timeout_s: float = 2.0,
                 teacher_manifest: pathlib.Path | None = None) -> dict[str, Any]:
    """The gateway config of one stage: teacher, the candidate and ``stage.others``, one rollout state.

    ``students`` maps variant names to ONNX files (``manifests`` to their manifest.json when not
    the demo's); every stage shares one rollout state file, so a candidate takes its traffic from
    the variant the previous stage left stable. ``teacher_timeout_s`` bounds the teacher's answers,
    primary and shadow; ``teacher_manifest``: the teacher's own (a text teacher's names its tokenizer).
    """
    manifests = manifests or {}
    variants = [_variant("teacher", "teacher", models.teacher, "teacher-1", models, teacher_manifest,
                         timeout_s=teacher_timeout_s)]
    variants += [_variant(name, "student", students[name], name, models, manifests.get(name))
                 for name in (*stage.others, stage.variant)]
    stage_gates = {**gates, "input_drift": {**gates["input_drift"], "enabled": stage.input_drift_gate}}
    return {
        "model_name": model_name, "task": "classification", "variants": variants,
        # Per-request split: the demo's handful of Locust users would make a sticky 5 % canary
        # all-or-nothing (each user stays on one variant); production configs keep x-user-id.
        "routing": {"weights": {stage.serving: 100}, "sticky_header": None},
        # Every canary request is compared: the teacher answers the student's in the background
        # and the student the teacher's, so each check has enough pairs at any weight.
        "shadow": {"fraction": 1.0, "canary_compare_fraction": 1.0, "queue_size": 256, "timeout_s": teacher_timeout_s},
        # Small segments: the captured rows reach disk (and `kdgate capture export`) within seconds.
        "capture": {"enabled": True, "dir": str(workdir / f"capture-{stage.key}"), "segment_rows": 16},
        "admin": {"token_file": str(token_file)},
        "audit_log": str(workdir / "audit.jsonl"),
        "rollout": {
            "student": stage.variant, "steps": list(stage.steps), "interval_s": interval_s,
            "min_samples": min_samples, "failure_threshold": 2, "deadline_s": 20 * interval_s, "gates": stage_gates,
            "guard": guard or {"interval_s": interval_s, "min_samples": min_samples, "shadow_fraction": 0.25},
            "state_path": str(workdir / "rollout.sqlite"), "evidence_dir": str(workdir / "evidence"),
        },
    }


def base_dataset(config_path: pathlib.Path, out: pathlib.Path) -> pathlib.Path:
    """The distill config's data as a ``source: npz`` dataset (x, y, x_test, y_test, x_unlabeled):
    the base that ``kdgate capture export --base`` appends the captured rows to."""
    from distill.config import load_config
    from distill.data import load_dataset

    config = load_config(config_path)
    ds = load_dataset(config.data, seed=config.seed)
    np.savez(out, x=np.concatenate([ds.x_train, ds.x_val]), y=np.concatenate([ds.y_train, ds.y_val]),
             x_test=ds.x_test, y_test=ds.y_test, x_unlabeled=ds.x_unlabeled)
    return out


def redistill_config(config_path: pathlib.Path, models: DemoModels, data_npz: pathlib.Path,
                     epochs: int | None = None) -> dict[str, Any]:
    """The distill config of v3: the demo's student recipe on ``data_npz`` (original transfer set plus
    the captured rows), labelled by the served teacher.onnx; no sweep (one point), a one-epoch
    baseline, the recipe's student epochs unless ``epochs`` is given."""
    import yaml

    base = yaml.safe_load(config_path.read_text())
    student = base.get("student", {})
    sweep = base.get("sweep", {})
    return {
        "name": f"{base.get('name', 'demo')}-v3", "seed": base.get("seed", 0), "threads": base.get("threads", 2),
        "cache_dir": base.get("cache_dir", ".kdgate-cache"),
        "data": {"source": "npz", "path": str(data_npz)},
        "teacher": {"source": "onnx", "path": str(models.teacher)},
        "student": {"architecture": student.get("architecture", {}),
                    "train": {**student.get("train", {}), **({"epochs": epochs} if epochs else {})},
                    "baseline_train": {**student.get("baseline_train", {}), "epochs": 1}},
        "sweep": {"temperatures": sweep.get("temperatures", [4])[-1:], "alphas": sweep.get("alphas", [0.9])[-1:],
                  "epochs": 1, "data_fraction": 0.25},
        "export": {"int8": False, "triton": False, "latency_repeats": 10},
    }


def write_json(path: pathlib.Path, data: Any) -> pathlib.Path:
    """``data`` as indented JSON (numpy values and NaN made JSON-safe)."""
    from distill.report import json_safe

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(json_safe(data), indent=2) + "\n")
    return path
