"""Model-level latency: student vs teacher under ONNX Runtime, and each vs PyTorch eager.

Side by side in one process: the four (model, runtime) pairs are measured in interleaved
rounds, each the median per call over a round, the best round counting (the least
disturbed by other work on the machine) -- distill's own latency helpers
(:func:`distill.evaluate.onnx_latency_ms`, :func:`distill.evaluate.torch_latency_ms`),
one intra-op thread each, as a gateway replica runs them. The PyTorch modules are rebuilt
from the distill report's architecture with the weights read back from the ONNX files,
and checked to give the same outputs.

Example::

    .venv/bin/python loadtests/bench_models.py --models runs/demo --out runs/bench/models.json
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BATCHES = (1, 64)


def torch_from_onnx(report: dict, role: str, onnx_path: pathlib.Path):
    """The distilled PyTorch module of ``role`` with the weights of ``onnx_path``."""
    import onnx
    import torch
    from onnx import numpy_helper

    from distill.config import ArchitectureConfig
    from distill.models import build_model

    arch_section = report["config"]["teacher" if role == "teacher" else "student"]["architecture"]
    arch = ArchitectureConfig.model_validate(arch_section)
    model = build_model(arch, tuple(report["dataset"]["feature_shape"]), len(report["class_labels"]))
    weights = {i.name: torch.from_numpy(numpy_helper.to_array(i).copy()) for i in onnx.load(str(onnx_path)).graph.initializer}
    model.load_state_dict({k: weights[k] for k in model.state_dict()})
    return model.eval()


def _check_parity(model, onnx_path: pathlib.Path, x: np.ndarray) -> float:
    import torch

    from distill.export import onnx_predict

    with torch.no_grad():
        y_torch = model(torch.from_numpy(x)).numpy()
    return float(np.abs(y_torch - onnx_predict(onnx_path, x)).max())


def measure(models_dir: pathlib.Path, rounds: int, repeats: int) -> dict:
    """Best-round median ms per call for (student|teacher) x (onnxruntime|torch) x batch."""
    from distill.evaluate import onnx_latency_ms, torch_latency_ms

    report = json.loads((models_dir / "report.json").read_text())
    x = np.load(models_dir / "demo-traffic.npy") if (models_dir / "demo-traffic.npy").exists() else \
        np.random.default_rng(0).normal(size=(256, 40)).astype(np.float32)
    torch_models, parity = {}, {}
    for role in ("student", "teacher"):
        onnx_path = models_dir / f"{role}.onnx"
        torch_models[role] = torch_from_onnx(report, role, onnx_path)
        parity[role] = _check_parity(torch_models[role], onnx_path, x[:64])
    best: dict[str, dict[str, float]] = {}
    for _ in range(rounds):
        for role in ("student", "teacher"):
            runs = {f"{role}_onnxruntime": lambda: onnx_latency_ms(models_dir / f"{role}.onnx", x, BATCHES, repeats),
                    f"{role}_torch": lambda: torch_latency_ms(torch_models[role], x, BATCHES, repeats)}
            for key, run in runs.items():
                for batch, ms in run().items():
                    best.setdefault(key, {})[batch] = min(ms, best.get(key, {}).get(batch, ms))
    return {"latency_ms": best, "parity_max_abs": parity, "rows": int(len(x)),
            "params": {r: report[r].get("params") for r in ("student", "teacher")}}


def ratios(latency: dict) -> dict:
    """Teacher/student under ORT, and torch/ORT per model, per batch size."""
    out = {}
    for batch in (f"batch{b}" for b in BATCHES):
        out[f"teacher_vs_student_onnxruntime_{batch}"] = (
            latency["teacher_onnxruntime"][batch] / latency["student_onnxruntime"][batch])
        for role in ("student", "teacher"):
            out[f"{role}_torch_vs_onnxruntime_{batch}"] = (
                latency[f"{role}_torch"][batch] / latency[f"{role}_onnxruntime"][batch])
    return out


def report_lines(result: dict) -> list[str]:
    lines = [f"{'model / runtime':<24}" + "".join(f"{f'batch {b} ms':>14}" for b in BATCHES)]
    for key, per_batch in result["latency_ms"].items():
        lines.append(f"{key:<24}" + "".join(f"{per_batch[f'batch{b}']:>14.4f}" for b in BATCHES))
    lines += [f"{k}: {v:.2f}x" for k, v in result["ratios"].items()]
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=pathlib.Path, default=ROOT / "runs" / "demo",
                        help="a `kdgate distill` output folder (report.json, student.onnx, teacher.onnx)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (the best median counts)")
    parser.add_argument("--repeats", type=int, default=200, help="timed calls per round")
    parser.add_argument("--out", type=pathlib.Path, help="write the figures as JSON here")
    args = parser.parse_args(argv)
    result = measure(args.models, args.rounds, args.repeats)
    result["ratios"] = ratios(result["latency_ms"])
    print("\n".join(report_lines(result)))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
