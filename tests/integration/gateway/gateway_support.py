"""Helpers shared by the gateway integration tests (fixtures live in tests/integration/conftest.py)."""
from __future__ import annotations

import json
import os
import pathlib
import sys
import threading
import time

import httpx
import numpy as np

from gateway.serve.local import free_port, haproxy_files
from gateway.serve.local import wait_ready  # noqa: F401 -- re-exported for the tests

FEATURES = 40
ADMIN_TOKEN = "gateway-admin-token"  # what app_factory's token file holds
KDGATE = str(pathlib.Path(sys.executable).with_name("kdgate"))


def serve_command(config_path, port: int) -> list[str]:
    """``kdgate serve CONFIG`` on ``port`` with free metrics ports and 2 CPUs (its own local Ray)."""
    return [KDGATE, "serve", str(config_path), "--port", str(port), "--metrics-port", str(free_port()), "--num-cpus", "2"]


def serve_env() -> dict[str, str]:
    """This process's environment for a ``kdgate serve`` subprocess beside the session's Serve."""
    env = dict(os.environ)
    env.update(RAY_SERVE_HAPROXY_METRICS_PORT=str(free_port()), RAY_SERVE_HAPROXY_STATS_PORT=str(free_port()),
               RAY_AUTH_MODE="disabled")
    env.pop("RAY_ADDRESS", None)
    for name in haproxy_files():  # the session Serve's: kdgate serve makes its own
        env.pop(name, None)
    return env


def onnx_reference(path: str, x: np.ndarray) -> np.ndarray:
    """What ONNX Runtime answers for ``x`` (the expected gateway output)."""
    import onnxruntime as ort

    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return session.run(["logits"], {"input": x})[0]


def gateway_config(models: dict, tmp_path, **overrides) -> dict:
    """A gateway config dict: remote ONNX teacher, colocated ONNX student, 95/5 split."""
    config = {
        "model_name": "mnist1d",
        "variants": [
            {"name": "teacher", "role": "teacher", "backend": "onnx", "model_path": models["teacher"],
             "device": "cpu", "timeout_s": 5.0, "version": "t1",
             "batching": {"enabled": True, "max_batch_size": 16, "wait_timeout_s": 0.002}},
            {"name": "student", "role": "student", "backend": "onnx", "model_path": models["student"],
             "device": "cpu", "colocated": True, "version": "s1",
             "manifest_path": models["manifest"]},
        ],
        "routing": {"weights": {"teacher": 95, "student": 5}, "allow_force": True},
        "shadow": {"fraction": 0.0, "canary_compare_fraction": 0.0},
        "limits": {"max_batch_rows": 64, "max_body_bytes": 65536},
        "capture": {"dir": str(tmp_path / "capture"), "segment_rows": 4},
        "audit_log": str(tmp_path / "audit.jsonl"),
    }
    for key, value in overrides.items():
        config[key] = value
    return config


def deploy(config: dict, *, name: str, prefix: str) -> None:
    """Deploy (or update in place) one gateway application under ``prefix``."""
    from ray import serve

    from gateway.serve.app import build_app

    serve.run(build_app({"config": config}), name=name, route_prefix=prefix)


DEPLOY_TIMEOUT_S = 240


def serve_deploy(config: dict, *, name: str, prefix: str, overlay: dict | None = None,
                 deployments: list[dict] | None = None) -> None:
    """Deploy like ``serve deploy FILE.yaml``: a declarative config the controller builds.

    ``overlay`` is the Gateway deployment's ``user_config``: a redeploy that edits only it
    is applied in place (reconfigure); ``serve.run`` always ships a new code version.
    ``deployments`` adds per-deployment options, e.g. ``[{"name": "model-teacher", "num_replicas": 2}]``.
    """
    from ray.serve.context import _get_global_client
    from ray.serve.schema import ServeDeploySchema

    # One entry per deployment: the Gateway's options (if given) and its user_config together.
    options = next((d for d in deployments or [] if d["name"] == "Gateway"), {})
    gateway = {**options, "name": "Gateway", "user_config": overlay or {}}
    others = [d for d in deployments or [] if d["name"] != "Gateway"]
    schema = ServeDeploySchema(applications=[{
        "name": name, "route_prefix": prefix, "import_path": "gateway.serve.app:build_app",
        "args": {"config": config}, "deployments": [gateway, *others],
    }])
    # Serve's own blocking deploy gives up after a fixed 60 s; on a loaded 2-core CI machine
    # starting several replicas can take longer, so wait here with a longer bound.
    client = _get_global_client()
    client.deploy_apps(schema)
    client._wait_for_application_running(name, timeout_s=DEPLOY_TIMEOUT_S)
    client.wait_for_proxies_serving(wait_for_applications_running=True)


def post_predict(client: httpx.Client, url: str, body: dict, headers: dict | None = None,
                 model: str = "mnist1d") -> tuple[int | str, str]:
    """One V1 prediction: (status, start of the body), or (the error's name, its text) when the
    connection dropped or timed out -- a failed request for the load loops, never their end."""
    try:
        response = client.post(f"{url}/v1/models/{model}:predict", json=body, headers=headers)
        return response.status_code, response.text[:160]
    except httpx.HTTPError as err:
        return type(err).__name__, str(err)[:160]


RETRY_AFTER_S = 1.0   # what the gateway's own 503s ask for (Retry-After: 1)


def steady_load(url: str, stop: threading.Event, sent: list, failures: list, retried: list, *,
                client_retry: bool = True, started: float | None = None) -> None:
    """Constant V1 load (4 N(0, 1) rows per request); ``sent`` gets each answer's time.

    With ``client_retry`` a 5xx or a dropped connection is retried once after
    :data:`RETRY_AFTER_S` (inference is idempotent) and counted in ``retried``; a failure is what
    still is not a 200 after that. (An immediate retry can meet the dead replica again: HAProxy
    marks it down after a few failed checks, about half a second; seen as a 500.)
    """
    rng, t0 = np.random.default_rng(len(sent)), started if started is not None else time.monotonic()
    with httpx.Client(timeout=30) as client:
        while not stop.is_set():
            body = {"instances": rng.normal(size=(4, FEATURES)).round(4).tolist()}
            status, text = post_predict(client, url, body)
            if client_retry and not (isinstance(status, int) and status < 500):
                retried.append((round(time.monotonic() - t0, 2), status, text))
                time.sleep(RETRY_AFTER_S)
                status, text = post_predict(client, url, body)
            sent.append(time.monotonic())
            if status != 200:
                failures.append((round(time.monotonic() - t0, 2), status, text))


def drifting_traffic(url: str, stop: threading.Event, shift: list, failures: list, sent: list,
                     model: str = "mnist1d") -> None:
    """Sticky users sending N(0, 1) rows (the training distribution) plus ``shift[0]``.

    A dropped connection or a client timeout is a failed request like a non-200 answer: it is
    counted in ``failures`` and the traffic goes on. (It used to end this worker silently: a
    redeploy that dropped one request left the rollout with no traffic to observe.)
    """
    rng = np.random.default_rng(1)
    with httpx.Client(timeout=20) as client:
        while not stop.is_set():
            body = {"instances": (rng.normal(size=(32, FEATURES)) + shift[0]).round(4).tolist()}
            status, text = post_predict(client, url, body, headers={"x-user-id": f"user-{len(sent) % 50}"}, model=model)
            sent.append(shift[0])
            if status != 200:
                failures.append((status, text))
            if not isinstance(status, int):
                stop.wait(0.2)  # a refused connection fails at once: do not spin


def rollout_history(url: str) -> dict:
    return httpx.get(f"{url}/admin/rollout", headers={"authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=10).json()


def wait_for(url: str, done, timeout_s: float = 90.0, on_poll=None, traffic: "Traffic | None" = None) -> dict:
    """Poll ``GET /admin/rollout`` until ``done(history)``; returns the last history.

    With ``traffic``, a timeout also says what the traffic saw (a rollout with no traffic waits forever).
    """
    deadline, history = time.monotonic() + timeout_s, {}
    while time.monotonic() < deadline:
        history = rollout_history(url)
        if on_poll is not None:
            on_poll(history)
        if done(history):
            return history
        time.sleep(0.2)
    seen = "" if traffic is None else f"; traffic: {traffic.describe()}"
    raise AssertionError(f"timed out: {history.get('status')}{seen}")


class Traffic:
    """The drifting-traffic worker in a thread; ``shift[0]`` moves the inputs."""

    def __init__(self, url: str, model: str = "mnist1d"):
        self.stop, self.shift, self.failures, self.sent = threading.Event(), [0.0], [], []
        self.thread = threading.Thread(target=drifting_traffic,
                                       args=(url, self.stop, self.shift, self.failures, self.sent, model))
        self.thread.start()

    def end(self) -> None:
        self.stop.set()
        self.thread.join()

    def describe(self) -> str:
        alive = "running" if self.thread.is_alive() else "STOPPED"
        return f"{alive}, {len(self.sent)} requests, {len(self.failures)} failed {self.failures[:3]}"


def manifest_with_reference(onnx_models, tmp_path) -> str:
    """The student's manifest plus the training-input reference statistics distill/ writes."""
    from distill.export import reference_stats

    manifest = json.loads(pathlib.Path(onnx_models["manifest"]).read_text())
    x_train = np.random.default_rng(0).normal(size=(4000, FEATURES)).astype(np.float32)
    manifest["reference"] = reference_stats(x_train, None)
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(manifest))
    return str(path)


def held_rollout_config(onnx_models, tmp_path, *, interval_s: float, lookback_s: float | None = None) -> dict:
    """A gateway with a rollout of an agreeing student (the teacher's own file) that holds at 50 %.

    Input drift is judged against the training reference (:func:`manifest_with_reference`);
    no $/hour is configured, so the cost gate has no data and never lets the rollout reach
    100 %: drift injected later always hits a live canary, never a finished rollout.
    The admin token file holds :data:`ADMIN_TOKEN`. Checks look back ``lookback_s``
    (default two intervals): longer gathers enough rows on a slow machine, shorter sees drift sooner.
    """
    (tmp_path / "token").write_text(ADMIN_TOKEN)
    config = gateway_config(onnx_models, tmp_path, admin={"token_file": str(tmp_path / "token")})
    config["variants"][1].update(model_path=onnx_models["teacher"],
                                 manifest_path=manifest_with_reference(onnx_models, tmp_path))
    config["routing"]["weights"] = {"teacher": 100, "student": 0}
    config["shadow"] = {"fraction": 1.0, "canary_compare_fraction": 1.0}
    config["rollout"] = {
        # PSI over 40 features needs a few hundred rows: fewer give false alarms on a busy machine.
        "steps": ["shadow", 10, 50, 100], "interval_s": interval_s, "lookback_s": lookback_s or 2 * interval_s,
        "min_samples": 240,
        "failure_threshold": 2, "deadline_s": 120,
        "gates": {"latency": {"enabled": False}, "cost": {"enabled": True}, "input_drift": {"max_psi": 0.25}},
        "state_path": str(tmp_path / "rollout.sqlite"), "evidence_dir": str(tmp_path / "evidence"),
    }
    return config


def wait_for_student_weight(url: str, weight: float, timeout_s: float = 10.0) -> None:
    """Gateway replicas pick up the controller's split at their next sync (sub-second)."""
    deadline, seen = time.monotonic() + timeout_s, None
    while time.monotonic() < deadline:
        seen = httpx.get(f"{url}/admin/split", headers={"authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=10).json()["weights"]["student"]
        if seen == weight:
            return
        time.sleep(0.1)
    raise AssertionError(f"student weight is {seen}, expected {weight}")
