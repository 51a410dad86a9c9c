"""make bench's markdown and verdicts: every figure comes from the measured JSON."""
from __future__ import annotations

import importlib.util
import pathlib

from kdgate.bench.report import bench_markdown, machine_description, md_table
from kdgate.demo.load import read_locust_stats

ROOT = pathlib.Path(__file__).resolve().parents[3]


def _bench_gateway():
    spec = importlib.util.spec_from_file_location("bench_gateway_under_test", ROOT / "loadtests" / "bench_gateway.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _side(p50, p99, rps=None):
    return {"p50_ms": p50, "p99_ms": p99, "max_rps": rps, "failures": 0, "requests": 100}


def _gateway_result(bg) -> dict:
    result = {"bare_student": _side(1.0, 2.0, 400), "gateway_student": _side(0.9, 2.2, 380),
              "bare_student_aa": _side(1.02, 2.1),
              "bare_teacher": _side(1.2, 3.0, 300), "gateway_teacher": _side(4.0, 9.0, 150),
              "gateway_teacher_colocated": _side(1.3, 3.1, 280),
              "gateway_teacher_nobatch": _side(3.0, 8.0), "shadow_0": _side(1.0, 2.0), "shadow_10": _side(1.0, 2.05),
              "gateway_teacher_c32": _side(None, None, 200), "gateway_teacher_nobatch_c32": _side(None, None, 100),
              "bare_hop_teacher": _side(3.5, 8.0, 200), "asgi_student": _side(0.5, 1.0, 900),
              "floor_student": _side(0.01, 0.02),
              "mode": "fast", "settings": {"batch_concurrency": 32}}
    result["ratios"] = bg.ratios(result)
    result["ratio_ci"] = {"bare_student_aa_p50": [0.99, 1.05]}
    result["targets"] = bg.verdicts(result["ratios"], {"student_p50_vs_bare": [0.85, 0.95]})
    return result


def test_verdicts_compare_each_ratio_with_its_target():
    bg = _bench_gateway()
    result = _gateway_result(bg)
    verdict = {t["key"]: t["met"] for t in result["targets"]}
    assert verdict == {"student_p50_vs_bare": True, "student_rps_vs_bare": True, "teacher_p50_vs_bare_hop": True,
                       "teacher_colocated_p50_vs_bare": True, "teacher_colocated_rps_vs_bare": True,
                       "shadow10_p99_vs_shadow0": True, "batching_p50_on_vs_off": False,
                       "batching_rps_on_vs_off": True}
    assert round(result["ratios"]["student_overhead_us"]) == -100  # 0.9 ms gateway vs 1.0 ms bare
    assert bg.verdicts({})[0]["met"] is False  # nothing measured is never "met"


def test_markdown_quotes_measured_figures_and_the_machine():
    bg = _bench_gateway()
    models = {"latency_ms": {"student_onnxruntime": {"batch1": 0.01, "batch64": 0.2},
                             "student_torch": {"batch1": 0.05, "batch64": 0.3},
                             "teacher_onnxruntime": {"batch1": 0.1, "batch64": 6.0},
                             "teacher_torch": {"batch1": 0.2, "batch64": 5.0}},
              "ratios": {"teacher_vs_student_onnxruntime_batch1": 10.0, "teacher_vs_student_onnxruntime_batch64": 30.0}}
    per = {"batch1": {"p50_ms": 0.1, "p99_ms": 0.2}}
    triton = {"latency": {"teacher": {"onnxruntime_in_process": per, "triton_http": {"batch1": {"p50_ms": 2.0,
              "p99_ms": 3.0}}, "triton_grpc": per}}}
    bench = {"command": "make bench", "wall_s": 300, "machine": machine_description(), "load_after": [3.0],
             "gateway": {"fast": _gateway_result(bg)}, "models": models, "triton": triton, "errors": {}}
    text = bench_markdown(bench)
    assert "| student path | 0.90 | 1.00 | 0.90× |" in text
    assert "| teacher-path p50 / bare hop app | 1.14× | — | <= 1.2x | met |" in text
    assert "| teacher p50 c=1 batching on / off | 1.33× | — | <= 1.05x | **NOT met** |" in text
    assert "| student-path p50 / bare | 0.90× | 0.85× – 0.95× | <= 1.05x | met |" in text
    assert "| student: plain uvicorn ASGI app, one process | 0.500 | 1.000 | 900 |" in text
    assert "student path, p50): -100 µs" in text
    assert "A/A, a second identical bare student app / the first (p50): 1.02×, 95 % interval 0.99× – 1.05×" in text
    assert "| teacher | 1 | 0.100 / 0.200 | 2.000 / 3.000 | 0.100 / 0.200 | 20.00× |" in text
    assert "cores" in text and "onnxruntime" in text and "Reproduce: `make bench`" in text


def test_ratio_interval_covers_the_true_ratio_and_narrows_with_more_rounds():
    import numpy as np

    bg = _bench_gateway()
    rng = np.random.default_rng(1)
    drift = lambda n: 1 + 0.5 * rng.random((n, 1))  # noqa: E731 -- each round's machine speed, shared by both sides

    def rounds(n):
        speed = drift(n)
        sample = lambda: speed * rng.lognormal(np.log(0.7), 0.3, (n, bg.CHUNK))  # noqa: E731
        return {"bare_student": list(sample()), "gateway_student": list(1.1 * sample())}

    few = bg.ratio_intervals(rounds(4))["student_p50_vs_bare"]
    many = bg.ratio_intervals(rounds(40))["student_p50_vs_bare"]
    assert many[0] < 1.1 < many[1] and many[0] > 1.0        # 40 rounds tell 1.1x from 1.0x
    assert many[1] - many[0] < few[1] - few[0]
    assert bg.ratio_intervals({"bare_student": [], "gateway_student": []}) == {}


def test_md_table_shape():
    assert md_table(["x"], [["1"], ["2"]]).splitlines() == ["| x |", "|---|", "| 1 |", "| 2 |"]


def test_locust_stats_csv_aggregated_row(tmp_path):
    csv = tmp_path / "run_stats.csv"
    csv.write_text("Type,Name,Request Count,Failure Count,50%,99%,Requests/s\n"
                   "POST,v1 predict,10,0,5,9,3.5\n,Aggregated,30,1,6,12,10.0\n")
    assert read_locust_stats(csv) == {"requests": 30, "failures": 1, "p50_ms": 6.0, "p99_ms": 12.0, "rps": 10.0}
    assert read_locust_stats(tmp_path / "missing.csv")["requests"] == 0
