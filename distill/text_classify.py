"""Text classification distillation: a pretrained HuggingFace encoder + a fitted head -> a tiny text classifier.

data (SpamAssassin / text file, labelled + transfer texts) -> teacher sentence embeddings (the
soft-label cache of distill/embed_pipeline.py, shared with the embedding task) -> a logistic
regression head fitted on the labelled train embeddings: the teacher is encoder + head -> its
logits over every text -> a temperature x alpha sweep of students on validation -> the chosen
setting trained with ``embedding.seeds`` seeds (KD on labelled + transfer texts), each next to a
same-size baseline trained on the labels alone -> ONNX export of student and teacher (parity
checked), batch-1 latency -> the same report as the MNIST-1D path (report.json / report.html).

Example:
    >>> report = run_text_classification(load_config("distill/configs/minilm-spam.yaml"), Path("runs/spam"))  # doctest: +SKIP
    >>> report["acceptance"]["retention"]["met"]  # doctest: +SKIP
    True
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from distill import evaluate as ev
from distill import export as ex
from distill.config import DistillConfig
from distill.data import UNLABELED
from distill.embed_eval import PROBE_C, PROBE_MAX_ITER
from distill.embed_pipeline import Prepared, _epoch_bar, export_models, init_token_table, prepare, start_run
from distill.losses import ClassificationDistillation
from distill.pipeline import Reporter, Timings
from distill.report import json_safe, write_report
from distill.text_classify_report import assemble_report, classification_manifest
from distill.text_int8 import INT8_BATCH, int8_records
from distill.text_student import WithClassifier, build_text_student, count_trainable, embed_ids
from distill.train import fit
from distill.verdicts import classification_verdicts

def fit_teacher_head(emb_train: np.ndarray, y_train: np.ndarray, n_classes: int, seed: int) -> nn.Linear:
    """A logistic regression on the teacher's train embeddings, as a torch Linear (exportable with the encoder)."""
    from sklearn.linear_model import LogisticRegression  # noqa: PLC0415

    probe = LogisticRegression(C=PROBE_C, max_iter=PROBE_MAX_ITER, random_state=seed)
    probe.fit(np.asarray(emb_train, np.float64), y_train)
    coef, bias = probe.coef_, probe.intercept_
    if n_classes == 2:  # sklearn keeps one row for two classes: logits (-z/2, z/2) give the same softmax
        coef, bias = np.stack([-coef[0] / 2, coef[0] / 2]), np.array([-bias[0] / 2, bias[0] / 2])
    head = nn.Linear(emb_train.shape[1], n_classes)
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(np.asarray(coef, np.float32)))
        head.bias.copy_(torch.from_numpy(np.asarray(bias, np.float32)))
    return head.eval()


@torch.no_grad()
def head_logits(head: nn.Linear, emb: np.ndarray) -> np.ndarray:
    """The teacher's logits from its (cached) embeddings."""
    return head(torch.from_numpy(np.asarray(emb, np.float32))).numpy()


def new_classifier(config: DistillConfig, prep: Prepared, seed: int, teacher_head: nn.Linear | None) -> WithClassifier:
    """A fresh text student with a class head.

    With ``teacher_head`` (the distilled student) its token table starts from the teacher's token
    vectors (``embedding.token_init``) and its head from the teacher's head: the untrained student
    already approximates encoder + head, and KD corrects the rest. Without it (the baseline) all is random.
    """
    tok, dim = prep.teacher.tokenizer, prep.teacher.dim
    transfer_ids = np.concatenate([prep.ids["train"], prep.ids["unlabeled"]])
    torch.manual_seed(seed)
    body = build_text_student(config.student.architecture, transfer_ids, tok.vocab_size, dim, tok.pad_id)
    model = WithClassifier(body, dim, len(prep.ds.class_labels))
    if teacher_head is not None and config.embedding.token_init:
        transfer_emb = np.concatenate([prep.emb["train"], prep.emb["unlabeled"]])
        init_token_table(config, prep.teacher, body, transfer_ids, transfer_emb)
        model.head.load_state_dict(teacher_head.state_dict())
    return model


def distil_classifier(config: DistillConfig, prep: Prepared, logits: dict, head: nn.Linear, temperature: float,
                      alpha: float, epochs: int, seed: int, on_epoch=None) -> WithClassifier:
    """A student trained on the teacher's soft labels over labelled + transfer texts (CE on the labelled)."""
    torch.set_num_threads(config.student_threads)
    model = new_classifier(config, prep, seed, head)
    ids = np.concatenate([prep.ids["train"], prep.ids["unlabeled"]])
    y = np.concatenate([prep.ds.y_train, np.full(len(prep.ids["unlabeled"]), UNLABELED, np.int64)])
    soft = np.concatenate([logits["train"], logits["unlabeled"]]).astype(np.float32)
    settings = config.student.train.model_copy(update={"epochs": epochs})
    fit(model, ids, y, soft, ClassificationDistillation(temperature, alpha), settings, seed, on_epoch)
    torch.set_num_threads(config.threads)
    return model


def train_baseline(config: DistillConfig, prep: Prepared, seed: int, on_epoch=None) -> WithClassifier:
    """The same architecture trained on the labelled texts alone (no teacher anywhere, random init)."""
    torch.set_num_threads(config.student_threads)
    model = new_classifier(config, prep, seed, None)
    fit(model, prep.ids["train"], prep.ds.y_train, None, ClassificationDistillation(),
        config.student.baseline_train, seed, on_epoch)
    torch.set_num_threads(config.threads)
    return model


def run_sweep(config: DistillConfig, prep: Prepared, logits: dict, head: nn.Linear, reporter: Reporter) -> list[dict]:
    """Every (temperature, alpha) on the short schedule, scored on validation; the best is marked chosen."""
    rows = []
    for t in config.sweep.temperatures:
        for a in config.sweep.alphas:
            model = distil_classifier(config, prep, logits, head, t, a, config.sweep.epochs, config.seed,
                                      _epoch_bar(reporter, f"sweep T={t:g} alpha={a:g}", config.sweep.epochs))
            out = embed_ids(model, prep.ids["val"])
            rows.append({"kind": "kd", "temperature": t, "alpha": a,
                         "val_accuracy": float(np.mean(out.argmax(1) == prep.ds.y_val)),
                         "val_agreement": ev.agreement(out, logits["val"]), "params": count_trainable(model),
                         "epochs": config.sweep.epochs, "chosen": False})
    best = max(rows, key=lambda r: (r["val_accuracy"], r["val_agreement"]))
    best["chosen"] = True
    return rows


def evaluate_seed(prep: Prepared, logits: dict, student, baseline) -> dict:
    """Test metrics of teacher, student and baseline for one seed, plus the student's agreement."""
    labels, y = prep.ds.class_labels, prep.ds.y_test
    outputs = {"teacher": logits["test"], "student": embed_ids(student, prep.ids["test"]),
               "baseline": embed_ids(baseline, prep.ids["test"])}
    result = {name: ev.classification_metrics(out, y, labels) for name, out in outputs.items()}
    result["agreement"] = ev.agreement(outputs["student"], outputs["teacher"])
    result["baseline_agreement"] = ev.agreement(outputs["baseline"], outputs["teacher"])
    return result


def _mean(values: list[float]) -> float:
    return float(np.mean(values))


def mean_metrics(per_seed: list[dict]) -> dict:
    """Per-variant accuracy, ECE and per-class accuracy averaged over seeds (the worst class from the mean)."""
    merged = {}
    for name in ("teacher", "student", "baseline"):
        runs = [seed[name] for seed in per_seed]
        per_class = {label: _mean([r["per_class"][label] for r in runs]) for label in runs[0]["per_class"]}
        worst = min(per_class, key=per_class.__getitem__)
        merged[name] = {"accuracy": _mean([r["accuracy"] for r in runs]), "ece": _mean([r["ece"] for r in runs]),
                        "per_class": per_class, "worst_class": {"label": worst, "accuracy": per_class[worst]}}
    return merged


def run_text_classification(config: DistillConfig, out_dir: Path, reporter: Reporter | None = None) -> dict:
    """Every stage; writes student.onnx, teacher.onnx, tokenizer.json, report.json/html, manifest.json."""
    reporter, out_dir, timings, start = start_run(config, out_dir, reporter)
    with timings.stage("data_and_teacher"):
        prep = prepare(config, reporter)
        head = fit_teacher_head(prep.emb["train"], prep.ds.y_train, len(prep.ds.class_labels), config.seed)
        logits = {split: head_logits(head, emb) for split, emb in prep.emb.items()}
    with timings.stage("sweep"):
        sweep = run_sweep(config, prep, logits, head, reporter)
    chosen = next(r for r in sweep if r["chosen"])
    reporter.log(f"sweep: chose T={chosen['temperature']:g} alpha={chosen['alpha']:g} "
                 f"(validation {chosen['val_accuracy']:.4f})")
    per_seed, exported, params = train_seeds(config, prep, logits, head, chosen, out_dir, timings, reporter)
    with timings.stage("int8"):
        int8 = evaluate_int8(prep, logits, exported, per_seed[0], out_dir)
    timings["total"] = round(time.perf_counter() - start, 3)
    report = build_report(config, prep, per_seed, sweep, chosen, params, exported, timings, int8)
    with timings.stage("report"):
        write_report(out_dir, report)
    report["timings_s"] = dict(timings)
    (out_dir / "report.json").write_text(json.dumps(json_safe(report), indent=2) + "\n")
    ex.write_manifest(out_dir / "manifest.json", classification_manifest(config, prep, report, exported))
    return report


def train_seeds(config: DistillConfig, prep: Prepared, logits: dict, head: nn.Linear, chosen: dict, out_dir: Path,
                timings: Timings, reporter: Reporter) -> tuple[list[dict], dict, dict]:
    """Student and baseline for every seed, the first student exported; (per-seed metrics, exports, params)."""
    per_seed, exported, epochs = [], None, config.student.train.epochs
    for seed in range(config.seed, config.seed + config.embedding.seeds):
        with timings.stage("final"):
            student = distil_classifier(config, prep, logits, head, chosen["temperature"], chosen["alpha"], epochs,
                                        seed, _epoch_bar(reporter, f"student (seed {seed})", epochs))
            baseline = train_baseline(config, prep, seed, _epoch_bar(
                reporter, f"baseline (seed {seed})", config.student.baseline_train.epochs))
        if exported is None:
            with timings.stage("export"):
                teacher = nn.Sequential(prep.teacher.encoder, head).eval()
                exported = export_models(config, prep, student, out_dir, teacher)
                params = {"teacher": prep.teacher.params + sum(p.numel() for p in head.parameters()),
                          "student": count_trainable(student)}
        per_seed.append(evaluate_seed(prep, logits, student, baseline))
        reporter.log(f"seed {seed}: student {per_seed[-1]['student']['accuracy']:.4f}, baseline "
                     f"{per_seed[-1]['baseline']['accuracy']:.4f}, agreement {per_seed[-1]['agreement']:.4f}")
    return per_seed, exported, params


def evaluate_int8(prep: Prepared, logits: dict, exported: dict, first_seed: dict, out_dir: Path) -> dict:
    """Each INT8 model judged as its FP32 model on the first seed: held-out accuracy (ECE, per class) and
    agreement with the FP32 teacher; {name: record} ({} without INT8)."""
    def judge(path: Path) -> dict:
        out = ex.onnx_predict(path, prep.ids["test"], INT8_BATCH, np.int64)
        return {**ev.classification_metrics(out, prep.ds.y_test, prep.ds.class_labels),
                "agreement": ev.agreement(out, logits["test"])}
    fp32 = {"student": {**first_seed["student"], "agreement": first_seed["agreement"]},
            "teacher": {**first_seed["teacher"], "agreement": 1.0}}  # the teacher agrees with itself
    return int8_records(exported, out_dir, fp32, judge)


def build_report(config, prep: Prepared, per_seed, sweep, chosen, params, exported, timings,
                 int8: dict | None = None) -> dict:
    """The MNIST-1D report's keys (docs/artifacts.md), figures as the mean over seeds."""
    report = assemble_report(config, prep, mean_metrics(per_seed), per_seed, sweep, chosen, params, exported,
                             timings, int8)
    report["verdicts"] = classification_verdicts(report)
    return report
