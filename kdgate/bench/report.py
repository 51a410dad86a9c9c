"""`make bench`'s markdown: one table per benchmark, the targets with met / NOT met, the machine.

Pure functions of the benchmark JSON (``loadtests/bench_all.py`` writes it); the README
quotes the result. Every figure comes from the measured JSON, nothing is typed in.

Example::

    print(bench_markdown(json.loads(pathlib.Path("runs/bench/bench.json").read_text())))
"""
from __future__ import annotations

import os
import platform
from collections.abc import Mapping, Sequence
from typing import Any


def _num(value: Any, digits: int = 2, suffix: str = "") -> str:
    if value is None:
        return "—"
    return f"{value:.{digits}f}{suffix}"


def _ratio(value: Any) -> str:
    return _num(value, 2, "×")


def md_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub markdown table.

    >>> print(md_table(["a", "b"], [["1", "2"]]))
    | a | b |
    |---|---|
    | 1 | 2 |
    """
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def gateway_table(result: Mapping[str, Any]) -> str:
    """Gateway vs bare Serve per path: p50, p99, max rps at 0 failures."""
    rows = []
    for path in ("student", "teacher"):
        gw, bare = result[f"gateway_{path}"], result[f"bare_{path}"]
        ratios = result["ratios"]
        rows.append([f"{path} path", _num(gw["p50_ms"]), _num(bare["p50_ms"]), _ratio(ratios[f"{path}_p50_vs_bare"]),
                     _num(gw["p99_ms"]), _num(bare["p99_ms"]), _num(gw["max_rps"], 0), _num(bare["max_rps"], 0),
                     _ratio(ratios[f"{path}_rps_vs_bare"])])
    nobatch = result.get("gateway_teacher_nobatch")
    if nobatch:  # sequential latency of the teacher path without the batch wait
        rows.append(["teacher path, batching off", _num(nobatch["p50_ms"]), _num(result["bare_teacher"]["p50_ms"]),
                     _ratio(result["ratios"].get("teacher_nobatch_p50_vs_bare")), _num(nobatch["p99_ms"]),
                     _num(result["bare_teacher"]["p99_ms"]), "—", "—", "—"])
    headers = ["path", "gateway p50 ms", "bare p50 ms", "p50 ratio", "gateway p99 ms", "bare p99 ms",
               "gateway max rps", "bare max rps", "rps ratio"]
    return md_table(headers, rows)


def shadow_batching_table(result: Mapping[str, Any]) -> str:
    """Shadow 0 % vs 10 % (student path) and batching off vs on (teacher path, c=32)."""
    s0, s10 = result["shadow_0"], result["shadow_10"]
    on, off = result["gateway_teacher_c32"], result["gateway_teacher_nobatch_c32"]
    concurrency = (result.get("settings") or {}).get("batch_concurrency", 32)
    rows = [
        ["student path, shadow 0 %", _num(s0["p50_ms"]), _num(s0["p99_ms"]), "—"],
        ["student path, shadow 10 %", _num(s10["p50_ms"]), _num(s10["p99_ms"]), "—"],
        [f"teacher path, batching off, c={concurrency}", "—", "—", _num(off["max_rps"], 0)],
        [f"teacher path, batching on, c={concurrency}", "—", "—", _num(on["max_rps"], 0)],
    ]
    return md_table(["setup", "p50 ms", "p99 ms", "max rps"], rows)


PEER_SIDES = (
    ("floor_student", "student: one in-process ONNX Runtime call (no HTTP)"),
    ("asgi_student", "student: plain uvicorn ASGI app, one process"),
    ("bare_student", "student: bare one-deployment Ray Serve app"),
    ("gateway_student", "student: kdgate gateway"),
    ("triton_student", "student: Triton server (pytriton, Python backend), V2 HTTP"),
    ("bare_teacher", "teacher: bare one-deployment Ray Serve app"),
    ("gateway_teacher_colocated", "teacher: kdgate gateway, colocated (ONNX Runtime in the Gateway replica)"),
    ("bare_hop_teacher", "teacher: bare two-deployment Ray Serve app (the same hop)"),
    ("gateway_teacher_nobatch", "teacher: kdgate gateway, batching off"),
    ("gateway_teacher", "teacher: kdgate gateway, batching on"),
)


def peers_table(result: Mapping[str, Any]) -> str:
    """The same models served by each peer, floor first: p50, p99, max rps; the gateway's overhead."""
    rows = [[label, _num(result[side]["p50_ms"], 3), _num(result[side]["p99_ms"], 3), _num(result[side]["max_rps"], 0)]
            for side, label in PEER_SIDES if result.get(side)]
    overhead = (result.get("ratios") or {}).get("student_overhead_us")
    caption = f"\n\ngateway overhead over the bare app (student path, p50): {_num(overhead, 0, ' µs')}"
    aa = (result.get("ratios") or {}).get("bare_student_aa_p50")
    if aa is not None:  # A/A: two identical bare apps, the resolution of the p50 ratios in this run
        caption += (f"; A/A, a second identical bare student app / the first (p50): {_ratio(aa)}, 95 % interval "
                    f"{_interval((result.get('ratio_ci') or {}).get('bare_student_aa_p50'))}")
    return md_table(["side", "p50 ms", "p99 ms", "max rps"], rows) + caption


def targets_table(targets: Sequence[Mapping[str, Any]]) -> str:
    """Each target, the measured ratio with its 95 % bootstrap interval (latency ratios) and met / NOT met."""
    rows = [[t["name"], _ratio(t["value"]), _interval(t.get("ci")), t["target"], "met" if t["met"] else "**NOT met**"]
            for t in targets]
    return md_table(["target", "measured", "95 % interval", "target", "verdict"], rows)


def _interval(ci: Sequence[float] | None) -> str:
    return "—" if not ci else f"{_ratio(ci[0])} – {_ratio(ci[1])}"


def models_table(models: Mapping[str, Any]) -> str:
    """ONNX Runtime vs PyTorch eager, student vs teacher, batch 1 and 64 (ms per call)."""
    lat = models["latency_ms"]
    rows = []
    for role in ("student", "teacher"):
        ort, torch = lat[f"{role}_onnxruntime"], lat[f"{role}_torch"]
        for batch in ("batch1", "batch64"):
            rows.append([role, batch.replace("batch", ""), _num(ort[batch], 4), _num(torch[batch], 4),
                         _ratio(torch[batch] / ort[batch])])
    ratio = models["ratios"]
    caption = (f"teacher / student under ONNX Runtime: {_ratio(ratio['teacher_vs_student_onnxruntime_batch1'])} "
               f"at batch 1, {_ratio(ratio['teacher_vs_student_onnxruntime_batch64'])} at batch 64")
    return md_table(["model", "batch", "ONNX Runtime ms", "PyTorch eager ms", "torch / ORT"], rows) + f"\n\n{caption}"


def triton_table(triton: Mapping[str, Any]) -> str:
    """Per model and batch: in-process ORT vs Triton HTTP and gRPC, p50/p99 per call."""
    rows = []
    for model, backends in triton["latency"].items():
        base = backends["onnxruntime_in_process"]
        for batch in base:
            cells = [model, batch.replace("batch", "")]
            for backend in ("onnxruntime_in_process", "triton_http", "triton_grpc"):
                v = backends[backend][batch]
                cells.append(f"{_num(v['p50_ms'], 3)} / {_num(v['p99_ms'], 3)}")
            cells.append(_ratio(backends["triton_http"][batch]["p50_ms"] / base[batch]["p50_ms"]))
            rows.append(cells)
    headers = ["model", "batch", "ORT in-process p50/p99 ms", "Triton HTTP p50/p99 ms", "Triton gRPC p50/p99 ms",
               "Triton HTTP / ORT p50"]
    return md_table(headers, rows)


def machine_description() -> dict[str, Any]:
    """Cores, memory, CPU model, OS, load and library versions of this machine."""
    import importlib.metadata as md

    import psutil

    cpu = "unknown"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    versions = {}
    for package in ("ray", "onnxruntime", "torch", "nvidia-pytriton", "tritonclient", "numpy", "locust"):
        try:
            versions[package] = md.version(package)
        except md.PackageNotFoundError:
            versions[package] = None
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "os": platform.platform(), "python": platform.python_version(), "versions": versions,
            "load_average": [round(v, 2) for v in os.getloadavg()]}


def machine_line(machine: Mapping[str, Any], load_after: Sequence[float] | None = None) -> str:
    """One markdown paragraph describing the machine the numbers come from."""
    versions = ", ".join(f"{k} {v}" for k, v in machine["versions"].items() if v)
    load = f"load average {machine['load_average'][0]:g} at the start"
    if load_after:
        load += f", {load_after[0]:g} at the end"
    return (f"Machine: {machine['cpu']}, {machine['cores']} cores, {machine['memory_gib']} GiB, {machine['os']}, "
            f"Python {machine['python']}; {versions}; {load} (the cores are shared with other work: "
            f"absolute figures are noisy, the side-by-side ratios are what to read).")


def bench_markdown(bench: Mapping[str, Any]) -> str:
    """The whole markdown report of a `make bench` run."""
    parts = ["# kdgate benchmarks", "", f"Reproduce: `{bench['command']}` (wall time {bench['wall_s']:.0f} s).", "",
             machine_line(bench["machine"], bench.get("load_after")), ""]
    for mode, result in bench.get("gateway", {}).items():
        parts += [f"## Gateway vs bare Ray Serve app — {result['mode']} mode", "", gateway_table(result), "",
                  f"### Peers: the same models served elsewhere on this machine ({mode} mode)", "",
                  peers_table(result), "",
                  f"### Shadow and dynamic batching ({mode} mode)", "", shadow_batching_table(result), "",
                  f"### Targets ({mode} mode)", "", targets_table(result["targets"]), ""]
    if bench.get("models"):
        parts += ["## Student vs teacher, ONNX Runtime vs PyTorch eager (1 thread, best-round median)", "",
                  models_table(bench["models"]), ""]
    if bench.get("triton"):
        parts += ["## Triton backend vs in-process ONNX Runtime (gateway backends, per call)", "",
                  triton_table(bench["triton"]), ""]
    for name, error in (bench.get("errors") or {}).items():
        parts += [f"**{name} failed**: {error}", ""]
    return "\n".join(parts)
