"""`make demo DEMO=text`: the reference text scenario, a pretrained transformer teacher and a tiny text student.

1. distil (``kdgate distill deployments/demo/distill-minilm-spam.yaml``): all-MiniLM-L6-v2 plus a
   logistic-regression head fitted on labelled SpamAssassin emails is the teacher; a bag-of-tokens
   student over its tokenizer learns its soft labels; both exported to ONNX beside
   ``tokenizer.json`` and the manifest; the held-out emails become the load test's texts;
2. the gateway on a private local Ray Serve: the teacher in its own deployment (ONNX Runtime,
   dynamic batching), the student colocated; Locust sends the held-out emails as texts (V1
   strings and V2 ``BYTES``), which the gateway tokenises for each model;
3. **v1**: shadow -> 5 -> 25 -> 50 -> 100 %, gated on agreement with the teacher, KL, latency,
   errors, output drift and cost -- promoted and guarded;
4. **v2**: a corrupted copy of v1 takes a live 5 % canary from v1; the gates fail and the
   controller rolls it back onto v1;
5. the one-client latency check (texts) and the report, as in the MNIST-1D demo
   (:mod:`kdgate.demo.run`).

Example::

    make demo DEMO=text                                   # = python -m kdgate.demo --scenario text
    .venv/bin/python -m kdgate.demo --scenario text --skip-distill
"""
from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any

import numpy as np

from kdgate.demo.run import Demo
from kdgate.demo.setup import (
    STUDENT_USD_PER_HOUR, TEACHER_USD_PER_HOUR, Stage, calibrated_gates, offline_agreement, perturb_onnx,
    write_json,
)

MODEL_NAME = "minilm-spam"
TEACHER_TIMEOUT_S = 10.0   # a CPU transformer's batch of 32 under load, with room
# No input-drift gate: a text manifest carries no per-feature reference (docs/artifacts.md).
STAGES = (
    Stage("v1", "v1: distilled text student", "v1", "v1", ("shadow", 5, 25, 50, 100), "Guarding", "v1",
          input_drift_gate=False),
    Stage("v2", "v2: corrupted text student", "v2", "v2", (5, 25, 50, 100), "RolledBack", "v1",
          serving="v1", others=("v1",), input_drift_gate=False),
)


class TextDemo(Demo):
    """The MNIST-1D demo's chapters v1 and v2 on text traffic (see the module docstring)."""

    stages = STAGES
    title, model_name = "SpamAssassin emails, MiniLM teacher", MODEL_NAME

    def __init__(self, args, console):
        super().__init__(args, console)
        self.models = dataclasses.replace(self.models, traffic=self.models.dir / "demo-traffic.json")

    def write_traffic(self) -> int:
        """The distill config's held-out emails as the load test's texts (JSON list)."""
        from distill.config import load_config
        from distill.textdata import load_text_dataset

        config = load_config(self.args.config)
        texts = load_text_dataset(config.data, seed=config.seed).texts_test
        write_json(self.models.traffic, texts)
        return len(texts)

    def texts(self) -> list[str]:
        return json.loads(self.models.traffic.read_text())

    def token_ids(self, texts: list[str]) -> np.ndarray:
        """The texts as the models' int64 ids, as the gateway tokenises them (the manifest's tokenizer)."""
        from gateway.core.manifest import read_manifest
        from gateway.text import Tokenizer

        info = read_manifest(self.models.manifest).tokenizer
        tokenizer = Tokenizer(str(self.models.dir / info.file), info.max_length, info.pad_id)
        return tokenizer.encode(tuple(texts), width=info.max_length)

    def prepare(self) -> tuple[dict[str, Any], dict[str, Any], dict[str, pathlib.Path]]:
        ids = self.token_ids(self.texts())
        good = offline_agreement(self.models.teacher, self.models.student, ids)
        bad_path = perturb_onnx(self.models.student, self.models.dir / "student-bad.onnx", self.args.bad_noise)
        bad = offline_agreement(self.models.teacher, bad_path, ids)
        gates = calibrated_gates(good)
        self.say(f"offline agreement with the teacher on {good['rows']} held-out emails: v1 {good['agreement']:.1%}, "
                 f"corrupted v2 {bad['agreement']:.1%}; agreement gate: Wilson lower bound >= "
                 f"{gates['agreement']['min_lower_bound']:.3f}, KL gate <= {gates['kl']['max_mean']:.3f}")
        return {"v1": good, "v2": bad}, gates, {"v1": self.models.student, "v2": bad_path}

    def stage_config(self, stage: Stage, **kwargs) -> dict[str, Any]:
        return super().stage_config(stage, model_name=MODEL_NAME, teacher_timeout_s=TEACHER_TIMEOUT_S,
                                    teacher_manifest=self.models.manifest, **kwargs)

    def latency_bodies(self) -> list[bytes]:
        from kdgate.demo.latency import v2_bodies

        return v2_bodies(texts=self.texts())

    def locust_env(self) -> dict[str, str]:
        return {"KDGATE_TEXT_FILE": str(self.models.traffic), "KDGATE_ROWS_PER_REQUEST": "1"}

    def info(self) -> list[str]:
        return [
            "Requests carry one email each (V1 strings, V2 BYTES); the gateway tokenises it with the manifest's "
            "tokenizer.json for teacher and student. The split is per request (sticky_header: null).",
            f"v2 is v1 with Gaussian noise of {self.args.bad_noise:g} x each weight tensor's std added "
            "(a corrupted export); it goes straight to a live 5 % canary taken from the stable v1.",
            "No input-drift gate: a text student's manifest carries no per-feature training reference.",
            f"After a promotion the teacher answers only the guard's {self.args.guard_shadow:.0%} shadow share "
            "of the stable student's traffic.",
            "Cost per inference = busy seconds x $/hour of the variant / inferences "
            f"(teacher ${TEACHER_USD_PER_HOUR}/h, student ${STUDENT_USD_PER_HOUR}/h).",
        ]
