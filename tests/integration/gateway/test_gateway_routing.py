"""Traffic split, sticky users and live config changes on a real Ray Serve instance."""
from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter

import httpx
import pytest
from gateway_support import FEATURES, deploy, gateway_config, serve_deploy, wait_ready

pytestmark = pytest.mark.integration

TOKEN = "routing-admin-token"
ROW = [0.25] * FEATURES


@pytest.fixture()
def routed_app(serve_instance, onnx_models, tmp_path, request):
    """A fresh gateway app (name = the test's) with a token file; deleted afterwards."""
    from ray import serve

    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    name = request.node.name.replace("[", "-").replace("]", "")[:40]
    config = gateway_config(onnx_models, tmp_path, admin={"token_file": str(token_file)})
    config["routing"]["allow_force"] = False
    declarative = "under_load" in name  # the `serve deploy` path; one such app at a time
    (serve_deploy if declarative else deploy)(config, name=name, prefix=f"/{name}")
    url = f"{serve_instance['url']}/{name}"
    wait_ready(url)
    yield {"url": url, "config": config, "name": name, "tmp": tmp_path}
    serve.delete(name)


def _set_split(url: str, student: float) -> None:
    response = httpx.put(f"{url}/admin/split", json={"weights": {"teacher": 100 - student, "student": student}},
                         headers={"authorization": f"Bearer {TOKEN}"}, timeout=10)
    assert response.status_code == 200, response.text


async def _variants(url: str, n: int, *, concurrency: int = 32, keys: list[str] | None = None) -> list[str]:
    """Send ``n`` V1 requests (``keys[i]`` as x-user-id when given); the serving variant of each."""
    results: list[str] = [""] * n
    body = json.dumps({"instances": [ROW]}).encode()
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        async def worker(start: int) -> None:
            for i in range(start, n, concurrency):
                headers = {"content-type": "application/json"}
                if keys is not None:
                    headers["x-user-id"] = keys[i]
                response = await client.post(f"{url}/v1/models/mnist1d:predict", content=body, headers=headers)
                assert response.status_code == 200, response.text
                results[i] = response.headers["x-kdgate-variant"]

        await asyncio.gather(*(worker(k) for k in range(concurrency)))
    return results


@pytest.mark.slow
def test_student_share_is_five_percent_over_20000_requests(routed_app):
    served = Counter(asyncio.run(_variants(routed_app["url"], 20_000)))
    share = served["student"] / 20_000
    assert served["student"] + served["teacher"] == 20_000
    assert abs(share - 0.05) <= 0.005, f"student share {share:.4f}"


def test_sticky_users_only_ever_move_to_the_student_as_its_weight_rises(routed_app):
    url = routed_app["url"]
    keys = [f"user-{i}" for i in range(600)]
    history: dict[str, list[str]] = {key: [] for key in keys}
    for weight in (5, 10, 25, 50, 100):
        _set_split(url, weight)
        for key, variant in zip(keys, asyncio.run(_variants(url, len(keys), keys=keys))):
            history[key].append(variant)
        # The same key asked again under the same weight gets the same answer.
        again = asyncio.run(_variants(url, 50, keys=keys[:50]))
        assert again == [history[key][-1] for key in keys[:50]]
    for key, seen in history.items():
        first_student = seen.index("student")  # at 100 % everyone is on the student
        assert all(v == "student" for v in seen[first_student:]), f"{key} flipped back: {seen}"
    at_25 = sum(seen[2] == "student" for seen in history.values()) / len(keys)
    assert 0.15 < at_25 < 0.35, f"share of keys on the student at 25 %: {at_25:.3f}"


def _load(url: str, stop: threading.Event, outcome: Counter) -> None:
    body = json.dumps({"instances": [ROW, ROW]}).encode()
    with httpx.Client(timeout=30) as client:
        while not stop.is_set():
            try:
                response = client.post(f"{url}/v1/models/mnist1d:predict", content=body,
                                       headers={"content-type": "application/json"})
                outcome[response.status_code] += 1
                outcome[response.headers.get("x-kdgate-variant", "none")] += 1
            except httpx.HTTPError as err:
                outcome[type(err).__name__] += 1


def test_split_changes_under_load_fail_no_request(routed_app):
    url, config, name = routed_app["url"], routed_app["config"], routed_app["name"]
    stop, outcome = threading.Event(), Counter()
    threads = [threading.Thread(target=_load, args=(url, stop, outcome)) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        for student in (25, 50):
            _set_split(url, student)
        for student in (75, 10):  # the `serve deploy` path: same app, edited user_config
            overlay = {"routing": {"weights": {"teacher": 100 - student, "student": student}}}
            serve_deploy(config, name=name, prefix=f"/{name}", overlay=overlay)
        _set_split(url, 100)
        wait_ready(url)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    failures = sum(n for key, n in outcome.items() if key not in (200, "teacher", "student"))
    assert failures == 0, outcome
    assert outcome[200] > 50 and outcome["student"] > 0 and outcome["teacher"] > 0
    after = Counter(asyncio.run(_variants(url, 40)))
    assert after == {"student": 40}
    audit = [json.loads(line) for line in (routed_app["tmp"] / "audit.jsonl").read_text().splitlines()]
    deploy_changes = [e for e in audit if e["actor"] == "serve-deploy" and e["action"] != "config.initial"]
    # reconfigure() ran on the live replica (a restarted one would log config.initial again)
    assert [e["new"]["routing.weights.student"] for e in deploy_changes] == [75.0, 10.0]
    assert sum(e["action"] == "config.initial" for e in audit) == 1
