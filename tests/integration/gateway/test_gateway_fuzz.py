"""schemathesis against the gateway's own OpenAPI document: no input makes it answer 5xx;
and the admin token it sends never reaches a log."""
from __future__ import annotations

import pathlib

import httpx
import pytest
from gateway_support import ADMIN_TOKEN, deploy, gateway_config, wait_ready
from hypothesis import HealthCheck, settings

schemathesis = pytest.importorskip("schemathesis")

pytestmark = [pytest.mark.integration, pytest.mark.slow]
APP = "fuzz"


def _schema():
    from gateway.http.routes import openapi_document

    return schemathesis.openapi.from_dict(openapi_document())


schema = _schema()


@pytest.fixture(scope="module")
def fuzz_gateway(serve_instance, onnx_models, tmp_path_factory):
    """One gateway with every feature on (shadow, capture, rollout, admin token) for the whole module."""
    from ray import serve

    tmp = tmp_path_factory.mktemp("fuzz")
    (tmp / "token").write_text(ADMIN_TOKEN)
    config = gateway_config(onnx_models, tmp, admin={"token_file": str(tmp / "token")})
    config["shadow"] = {"fraction": 0.5, "canary_compare_fraction": 0.5}
    config["rollout"] = {"steps": ["shadow", 10, 100], "interval_s": 3600,
                         "state_path": str(tmp / "rollout.sqlite"), "evidence_dir": str(tmp / "evidence")}
    deploy(config, name=APP, prefix=f"/{APP}")
    url = f"{serve_instance['url']}/{APP}"
    wait_ready(url)
    served = httpx.get(f"{url}/openapi.json", timeout=10).json()
    assert served == schema.raw_schema, "the gateway serves another OpenAPI document than the one fuzzed"
    yield url
    serve.delete(APP)


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_generated_request_gets_a_server_error(fuzz_gateway, case):
    import requests

    # With the admin token, so the admin handlers' bodies are exercised too, not just the 401.
    # Sent with plain requests: schemathesis' own transport trips over this urllib3's pool API.
    kwargs = case.as_transport_kwargs(base_url=fuzz_gateway, headers={"authorization": f"Bearer {ADMIN_TOKEN}"})
    response = requests.request(**kwargs, timeout=30)
    assert response.status_code < 500, f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:300]}"
    if response.status_code >= 400:
        assert response.json()["error"], response.text
    alive = httpx.get(f"{fuzz_gateway}/v2/health/live", timeout=10)
    assert alive.status_code == 200


def _session_files():
    import ray

    session = pathlib.Path(ray._private.worker._global_node.get_session_dir_path())
    return [p for p in (session / "logs").rglob("*") if p.is_file()]


def test_the_admin_token_never_appears_in_any_log(fuzz_gateway, tmp_path_factory):
    """After every operation ran with the token (and wrong tokens got 401s), no log holds it."""
    wrong = "wrong-" + ADMIN_TOKEN[::-1]
    assert httpx.get(f"{fuzz_gateway}/admin/split", headers={"authorization": f"Bearer {wrong}"},
                     timeout=10).status_code == 401
    assert httpx.get(f"{fuzz_gateway}/admin/split", headers={"authorization": f"Bearer {ADMIN_TOKEN}"},
                     timeout=10).status_code == 200
    files = _session_files() + [p for p in tmp_path_factory.getbasetemp().rglob("*.jsonl")]
    assert len(files) > 10
    leaks = [str(p) for p in files if ADMIN_TOKEN.encode() in p.read_bytes() or wrong.encode() in p.read_bytes()]
    assert leaks == []


def _raw_bodies(n: int) -> list[bytes]:
    """Arbitrary bytes, truncated and pathological JSON, huge numbers (seeded: the same every run)."""
    import json
    import random

    rng = random.Random(7)
    tensor = {"name": "input", "shape": [1, 40], "datatype": "FP32", "data": [0.1] * 40}
    seeds = [json.dumps({"inputs": [tensor]}).encode(), json.dumps({"instances": [[0.1] * 40]}).encode(),
             json.dumps({"weights": {"teacher": 100}}).encode(), b"[" * 50_000, b'{"instances": [[' + b"9" * 5000 + b"]]}",
             b'{"instances": [[1e999]]}', b"\xff\xfe\xfd", b"\xef\xbb\xbf{}", b"", b"null", b"{" * 3 + b"}"]
    bodies = list(seeds)
    while len(bodies) < n:
        body = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 6)):
            at = rng.randrange(len(body) + 1)
            roll = rng.random()
            if roll < 0.3 and body:
                del body[at % len(body)]
            elif roll < 0.6:
                body[at:at] = bytes([rng.randrange(256)])
            elif roll < 0.8:
                body = body[:at]
            else:
                body[at:at] = rng.choice([b"NaN", b"-", b"1e308", b'"', b"[", b"}", b"\x00", b"\\u0000"])
        bodies.append(bytes(body))
    return bodies


CONTENT_TYPES = ["application/json", "application/json; charset=utf-16", "text/plain", "application/octet-stream",
                 "multipart/form-data; boundary=x", "application/x-www-form-urlencoded", ""]


def test_raw_bodies_never_get_a_server_error(fuzz_gateway):
    """Raw, broken bodies with odd content types and encodings on every body route: 0 x 5xx, still serving."""
    routes = [("POST", "/v2/models/mnist1d/infer"), ("POST", "/v1/models/mnist1d:predict"),
              ("PUT", "/admin/config"), ("PUT", "/admin/split"), ("POST", "/admin/rollout/set_weight")]
    bodies = _raw_bodies(240)
    server_errors, cases = [], 0
    with httpx.Client(timeout=30) as client:
        for i, body in enumerate(bodies):
            method, path = routes[i % len(routes)]
            headers = {"authorization": f"Bearer {ADMIN_TOKEN}", "content-type": CONTENT_TYPES[i % len(CONTENT_TYPES)]}
            if i % 11 == 0:
                headers["content-encoding"] = "gzip"  # a body that is not gzip at all
            if i % 13 == 0:
                headers["inference-header-content-length"] = str((i * 7919) % (len(body) + 3) - 1)
            content = iter([body[: len(body) // 2], body[len(body) // 2:]]) if i % 5 == 0 else body  # chunked
            response = client.request(method, f"{fuzz_gateway}{path}", content=content, headers=headers)
            cases += 1
            if response.status_code >= 500:
                server_errors.append((method, path, response.status_code, body[:80], response.text[:200]))
    print(f"raw-body fuzz: {cases} cases over {len(routes)} routes, {len(server_errors)} x 5xx")
    assert server_errors == []
    assert httpx.get(f"{fuzz_gateway}/v2/health/ready", timeout=10).status_code == 200
