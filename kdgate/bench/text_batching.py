"""Dynamic batching on a transformer teacher: the MiniLM teacher behind the gateway, batching on vs off.

Two gateway apps on one local Ray Serve, identical but for the teacher deployment's batching,
100 % teacher (ONNX Runtime, one intra-op thread, its own deployment); clients send one
real email per request as V1 text (tokenised in the gateway, ``max_length`` tokens). Rounds
alternate between the apps so machine noise hits both alike. Printed: requests/s at
concurrency ``--concurrency`` (issue 13's target: on / off >= 2x) and p50 at concurrency 1
(target: on / off <= 1.05x, a lone request pays no batch window), as measured ratios.

Example::

    .venv/bin/python -m kdgate.bench.text_batching --artifacts runs/bench-text --out runs/bench/text-batching.json
"""
from __future__ import annotations

import argparse
import asyncio
import json
import pathlib
import sys
import tempfile
import time

import httpx
import numpy as np

PREDICT = "/v1/models/minilm:predict"


def _config(artifacts: pathlib.Path, tmp: pathlib.Path, batching: bool) -> dict:
    manifest = str(artifacts / "manifest.json")
    return {
        "model_name": "minilm", "task": "embedding",
        "variants": [
            {"name": "teacher", "role": "teacher", "backend": "onnx", "model_path": str(artifacts / "teacher.onnx"),
             "manifest_path": manifest, "device": "cpu", "timeout_s": 30.0,
             "batching": {"enabled": batching, "max_batch_size": 32, "wait_timeout_s": 0.004}},
            {"name": "student", "role": "student", "backend": "onnx", "model_path": str(artifacts / "student.onnx"),
             "manifest_path": manifest, "device": "cpu", "colocated": True},
        ],
        "routing": {"weights": {"teacher": 100, "student": 0}},
        "shadow": {"fraction": 0.0, "canary_compare_fraction": 0.0},
        "limits": {"max_batch_rows": 64, "max_text_bytes": 16384},
        "capture": {"enabled": False}, "audit_log": str(tmp / f"audit-{batching}.jsonl"),
    }


async def _load(url: str, bodies: list[bytes], concurrency: int, seconds: float) -> tuple[float, list[float], int]:
    """(requests/s, latencies s, failures) of ``concurrency`` clients for ``seconds``."""
    latencies, failures, stop = [], [0], time.perf_counter() + seconds

    async def client(worker: int, http: httpx.AsyncClient) -> None:
        i = worker
        while time.perf_counter() < stop:
            start = time.perf_counter()
            response = await http.post(url, content=bodies[i % len(bodies)],
                                       headers={"content-type": "application/json"})
            if response.status_code == 200:
                latencies.append(time.perf_counter() - start)
            else:
                failures[0] += 1
            i += concurrency

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=60, limits=limits) as http:
        began = time.perf_counter()
        await asyncio.gather(*(client(w, http) for w in range(concurrency)))
        elapsed = time.perf_counter() - began
    return len(latencies) / elapsed, latencies, failures[0]


def measure(base: str, bodies: list[bytes], args) -> dict:
    """Alternating rounds per side: rps at ``args.concurrency`` and p50 at concurrency 1."""
    sides = {"on": f"{base}/text-batch-on{PREDICT}", "off": f"{base}/text-batch-off{PREDICT}"}
    for url in sides.values():  # warm-up: sessions loaded, connections open
        asyncio.run(_load(url, bodies, 4, 2.0))
    rps = {side: [] for side in sides}
    lat1 = {side: [] for side in sides}
    failures = 0
    for _ in range(args.rounds):
        for side, url in sides.items():
            r, _lat, failed = asyncio.run(_load(url, bodies, args.concurrency, args.seconds))
            rps[side].append(r)
            _r1, lat, failed1 = asyncio.run(_load(url, bodies, 1, args.seconds / 2))
            lat1[side].extend(lat)
            failures += failed + failed1
    result = {side: {"rps_c": float(np.median(rps[side])), "rps_rounds": rps[side],
                     "p50_ms_c1": 1000 * float(np.median(lat1[side]))} for side in sides}
    result["ratios"] = {"rps_on_vs_off": result["on"]["rps_c"] / result["off"]["rps_c"],
                        "p50_c1_on_vs_off": result["on"]["p50_ms_c1"] / result["off"]["p50_ms_c1"]}
    result["failures"] = failures
    return result


def _texts(n: int, chars: int) -> list[str]:
    """Real emails (SpamAssassin, `make data-spam`), each cut to ``chars`` characters."""
    from distill.textdata import SPAM_FOLDER, default_data_dir, parse_email

    files = sorted((default_data_dir() / SPAM_FOLDER).glob("*/*.txt"))[::11][:n]
    if not files:
        sys.exit(f"no SpamAssassin corpus under {default_data_dir()}: run `make data-spam`")
    return [parse_email(f.read_bytes())[:chars] or "empty message" for f in files]


def _mean_tokens(artifacts: pathlib.Path, texts: list[str]) -> float:
    """Mean token count of ``texts`` under the artifact's tokenizer (padding excluded)."""
    from gateway.core.manifest import read_manifest
    from gateway.text import Tokenizer

    info = read_manifest(artifacts / "manifest.json").tokenizer
    ids = Tokenizer(str(artifacts / info.file), info.max_length, info.pad_id).encode(tuple(texts))
    return float((ids != info.pad_id).sum(axis=1).mean())


def main(argv: list[str] | None = None) -> dict:
    """Deploy both apps on a private local Ray Serve, measure, print, write ``--out``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifacts", type=pathlib.Path, default=pathlib.Path("runs/bench-text"),
                        help="folder with teacher.onnx, student.onnx, tokenizer.json, manifest.json")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=8.0, help="per round and side")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--chars", type=int, default=60,
                        help="characters per email (60: about 14 tokens, the short-text case; 400: max_length)")
    parser.add_argument("--out", type=pathlib.Path)
    args = parser.parse_args(argv)
    artifacts = args.artifacts.resolve()
    if not (artifacts / "teacher.onnx").is_file():
        sys.exit(f"{artifacts}/teacher.onnx missing: run `make bench-text` (exports the MiniLM teacher)")
    from ray import serve

    from gateway.serve.app import build_app
    from gateway.serve.local import LocalServe

    texts = _texts(64, args.chars)
    bodies = [json.dumps({"instances": [t]}).encode() for t in texts]
    with tempfile.TemporaryDirectory() as tmp, LocalServe(num_cpus=2) as local:
        for side, batching in (("on", True), ("off", False)):
            serve.run(build_app({"config": _config(artifacts, pathlib.Path(tmp), batching)}),
                      name=f"text-batch-{side}", route_prefix=f"/text-batch-{side}")
        result = measure(local.url, bodies, args)
    result.update(concurrency=args.concurrency, seconds=args.seconds, rounds=args.rounds, chars=args.chars,
                  mean_tokens=_mean_tokens(artifacts, texts))
    ratios = result["ratios"]
    print(f"MiniLM teacher via the gateway, 1 email per request ({result['mean_tokens']:.1f} tokens on average), "
          f"c={args.concurrency}: batching on "
          f"{result['on']['rps_c']:.1f} rps, off {result['off']['rps_c']:.1f} rps -> "
          f"{ratios['rps_on_vs_off']:.2f}x (target >= 2x: {'met' if ratios['rps_on_vs_off'] >= 2 else 'NOT met'})")
    print(f"c=1 p50: on {result['on']['p50_ms_c1']:.2f} ms, off {result['off']['p50_ms_c1']:.2f} ms -> "
          f"{ratios['p50_c1_on_vs_off']:.2f}x (target <= 1.05x: "
          f"{'met' if ratios['p50_c1_on_vs_off'] <= 1.05 else 'NOT met'}); failures {result['failures']}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
