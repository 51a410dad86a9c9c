"""The gateway's HTTP APIs on a real Ray Serve instance: V2 (tritonclient), V1, bad input, admin."""
from __future__ import annotations

import json

import httpx
import numpy as np
import pytest

from gateway_support import FEATURES, deploy, gateway_config, onnx_reference, wait_ready

pytestmark = pytest.mark.integration

TOKEN = "s3cret-admin-token"


@pytest.fixture(scope="module")
def gateway(serve_instance, onnx_models, tmp_path_factory, monkeypatch_module):
    """The gateway app under /api with a 95/5 split and forcing allowed."""
    from ray import serve

    monkeypatch_module.setenv("KDGATE_ADMIN_TOKEN", TOKEN)
    tmp = tmp_path_factory.mktemp("api")
    token_file = tmp / "token"
    token_file.write_text(TOKEN + "\n")
    config = gateway_config(onnx_models, tmp, admin={"token_file": str(token_file)})
    deploy(config, name="api", prefix="/api")
    url = serve_instance["url"] + "/api"
    wait_ready(url)
    yield {"url": url, "config": config, "tmp": tmp}
    serve.delete("api")


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def v1(url: str, instances, headers=None) -> httpx.Response:
    return httpx.post(f"{url}/v1/models/mnist1d:predict", json={"instances": instances},
                      headers=headers or {}, timeout=10)


def test_v1_predict_matches_onnx_runtime_for_each_forced_variant(gateway, onnx_models):
    x = onnx_models["x"][:3]
    for variant in ("teacher", "student"):
        response = v1(gateway["url"], x.tolist(), headers={"x-kdgate-force-variant": variant})
        assert response.status_code == 200, response.text
        assert response.headers["x-kdgate-variant"] == variant
        assert response.headers["x-kdgate-model-version"] == {"teacher": "t1", "student": "s1"}[variant]
        got = np.asarray(response.json()["predictions"], dtype=np.float32)
        np.testing.assert_allclose(got, onnx_reference(onnx_models[variant], x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("binary", [False, True])
def test_tritonclient_against_the_gateway_gets_correct_outputs(gateway, onnx_models, binary):
    import tritonclient.http as tc

    client = tc.InferenceServerClient(gateway["url"].removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("mnist1d")
    meta = client.get_model_metadata("mnist1d")
    assert meta["inputs"][0]["shape"] == [-1, FEATURES] and set(meta["versions"]) == {"t1", "s1"}
    x = onnx_models["x"][:5]
    request_input = tc.InferInput("input", list(x.shape), "FP32")
    request_input.set_data_from_numpy(x, binary_data=binary)
    output = tc.InferRequestedOutput("logits", binary_data=binary)
    for variant in ("teacher", "student"):
        result = client.infer("mnist1d", [request_input], outputs=[output],
                              headers={"x-kdgate-force-variant": variant})
        np.testing.assert_allclose(result.as_numpy("logits"), onnx_reference(onnx_models[variant], x),
                                   rtol=1e-5, atol=1e-5)
    # Pinning a model version routes to that variant.
    result = client.infer("mnist1d", [request_input], model_version="s1", outputs=[output])
    np.testing.assert_allclose(result.as_numpy("logits"), onnx_reference(onnx_models["student"], x),
                               rtol=1e-5, atol=1e-5)


def test_openapi_docs_are_served(gateway):
    assert httpx.get(f"{gateway['url']}/docs", timeout=10).status_code == 200
    paths = httpx.get(f"{gateway['url']}/openapi.json", timeout=10).json()["paths"]
    assert "/v2/models/{name}/infer" in paths and "/v1/models/{name}:predict" in paths


def _v2_body(data, shape, datatype="FP32") -> bytes:
    return json.dumps({"inputs": [{"name": "input", "shape": shape, "datatype": datatype, "data": data}]}).encode()


ROW = [0.5] * FEATURES
BAD_INPUTS = {
    # name: (path suffix, body, expected status, fragment of the message)
    "wrong shape": ("/v1/models/mnist1d:predict", json.dumps({"instances": [[0.5] * 7]}), 422, "wrong shape"),
    "ragged rows": ("/v1/models/mnist1d:predict", json.dumps({"instances": [ROW, [1.0]]}), 422, "wrong shape"),
    "wrong dtype": ("/v1/models/mnist1d:predict", json.dumps({"instances": [["a"] * FEATURES]}), 422, "wrong dtype"),
    "v2 wrong dtype": ("/v2/models/mnist1d/infer", _v2_body([1] * FEATURES, [1, FEATURES], "INT64"), 422, "wrong dtype"),
    "v2 shape vs data": ("/v2/models/mnist1d/infer", _v2_body(ROW, [2, FEATURES]), 422, "wrong shape"),
    "NaN": ("/v1/models/mnist1d:predict", json.dumps({"instances": [[float("nan")] + ROW[1:]]}), 422, "NaN or Inf"),
    "Inf": ("/v2/models/mnist1d/infer", _v2_body([float("inf")] + ROW[1:], [1, FEATURES]), 422, "NaN or Inf"),
    "empty batch": ("/v1/models/mnist1d:predict", json.dumps({"instances": []}), 422, "empty batch"),
    "v2 empty batch": ("/v2/models/mnist1d/infer", _v2_body([], [0, FEATURES]), 422, "empty batch"),
    "batch over limit": ("/v1/models/mnist1d:predict", json.dumps({"instances": [ROW] * 65}), 413, "max_batch_rows"),
    "body over limit": ("/v1/models/mnist1d:predict", json.dumps({"instances": [ROW] * 64, "pad": "x" * 70000}),
                        413, "max_body_bytes"),
    "malformed JSON": ("/v1/models/mnist1d:predict", '{"instances": [[1, 2', 400, "malformed JSON"),
    "not an inference request": ("/v2/models/mnist1d/infer", '{"hello": 1}', 400, "'inputs'"),
    "unknown model": ("/v1/models/nope:predict", json.dumps({"instances": [ROW]}), 404, "unknown model"),
    "unknown version": ("/v2/models/mnist1d/versions/9/infer", _v2_body(ROW, [1, FEATURES]), 404, "unknown version"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_a_4xx_json_error_naming_the_problem(gateway, case):
    suffix, body, status, fragment = BAD_INPUTS[case]
    response = httpx.post(gateway["url"] + suffix, content=body, timeout=10,
                          headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    assert fragment in response.json()["error"]
    # ...and the server keeps serving.
    assert v1(gateway["url"], [ROW]).status_code == 200


def _auth(token: str = TOKEN) -> dict:
    return {"authorization": f"Bearer {token}"}


def test_admin_needs_the_bearer_token(gateway):
    url = gateway["url"]
    assert httpx.get(f"{url}/admin/split", timeout=10).status_code == 401
    wrong = httpx.get(f"{url}/admin/split", headers=_auth("wrong"), timeout=10)
    assert wrong.status_code == 401 and "wrong admin token" in wrong.json()["error"]
    assert httpx.put(f"{url}/admin/split", json={"weights": {"teacher": 0, "student": 100}},
                     timeout=10).status_code == 401
    ok = httpx.get(f"{url}/admin/split", headers=_auth(), timeout=10)
    assert ok.status_code == 200 and ok.json()["weights"] == {"teacher": 95.0, "student": 5.0}


def test_invalid_admin_split_is_rejected_and_the_old_split_stays(gateway):
    url = gateway["url"]
    bad = httpx.put(f"{url}/admin/split", json={"weights": {"teacher": 90, "student": 5}},
                    headers=_auth(), timeout=10)
    assert bad.status_code == 422 and "must sum to 100" in bad.json()["error"]
    current = httpx.get(f"{url}/admin/config", headers=_auth(), timeout=10).json()["config"]
    assert current["routing"]["weights"] == {"teacher": 95.0, "student": 5.0}
    audit = [json.loads(line) for line in (gateway["tmp"] / "audit.jsonl").read_text().splitlines()]
    assert audit[-1]["action"] == "config.rejected" and audit[-1]["actor"] == "admin-api"


def test_unknown_route_and_wrong_method_are_json_errors(gateway):
    missing = httpx.get(f"{gateway['url']}/v3/nothing", timeout=10)
    assert missing.status_code == 404 and "no route" in missing.json()["error"]
    wrong = httpx.get(f"{gateway['url']}/v2/models/mnist1d/infer", timeout=10)
    assert wrong.status_code == 405 and "not allowed" in wrong.json()["error"]
    assert "swagger" in httpx.get(f"{gateway['url']}/docs", timeout=10).text.lower()


def test_admin_config_overlay_changes_shadow_live_and_rejects_bad_values(gateway):
    url = gateway["url"]
    ok = httpx.put(f"{url}/admin/config", json={"shadow": {"fraction": 0.25}}, headers=_auth(), timeout=10)
    assert ok.status_code == 200, ok.text
    assert ok.json()["config"]["shadow"]["fraction"] == 0.25
    assert "shadow.fraction: 0.0 -> 0.25" in ok.json()["changes"]
    bad = httpx.put(f"{url}/admin/config", json={"shadow": {"fraction": 3}}, headers=_auth(), timeout=10)
    assert bad.status_code == 422 and "shadow.fraction" in bad.json()["error"]
    current = httpx.get(f"{url}/admin/config", headers=_auth(), timeout=10).json()["config"]
    assert current["shadow"]["fraction"] == 0.25
    httpx.put(f"{url}/admin/config", json={"shadow": {"fraction": 0.0}}, headers=_auth(), timeout=10).raise_for_status()


def test_every_answer_carries_server_timing_and_the_handler_histogram_counts_each_inference(gateway):
    from kdgate.demo.latency import handler_counts, server_timing_s

    url = gateway["url"]
    before = httpx.get(f"{url}/admin/stats", headers=_auth(), timeout=10).json()
    answers = [v1(url, [ROW], headers={"x-kdgate-force-variant": "student"}) for _ in range(20)]
    errors = [httpx.post(f"{url}/v2/models/nope/infer", json={}, timeout=10), httpx.get(f"{url}/v3/x", timeout=10)]
    after = httpx.get(f"{url}/admin/stats", headers=_auth(), timeout=10).json()
    for response in answers + errors:
        seconds = server_timing_s(response.headers.get("server-timing"))
        assert seconds is not None and 0 < seconds < 5, response.headers
    assert {r.headers["x-kdgate-replica"] for r in answers} == {answers[0].headers["x-kdgate-replica"]}
    counts = handler_counts(before, after, "student")   # one replica in this module: its stats saw them all
    assert counts is not None and sum(counts) == 20
