"""Locust load test of the kdgate gateway: V2 and V1 users, sticky user keys, a step load shape.

Payload rows come from the bundled dataset that matches the served model's input width
(read from the V2 model metadata): MNIST-1D (40 features, generated offline with
``mnist1d.data.make_dataset``) or scikit-learn's digits (64). A text model (a ``BYTES``
input) gets texts: the JSON list in ``KDGATE_TEXT_FILE``, or SpamAssassin emails (``make
data-spam``) cut to 300 characters. Every simulated user keeps
one ``x-user-id`` for its whole life, so the canary split pins it to one variant. A
request fails unless the gateway answers 200 with one output row per input row.

The step shape adds ``KDGATE_STEP_USERS`` users every ``KDGATE_STEP_SECONDS`` for
``KDGATE_STEPS`` steps, then stops: the run is bounded by construction.

Example (loopback only; `make loadtest` wraps this and also starts a gateway):
    $ locust -f loadtests/locustfile.py --headless --host http://127.0.0.1:8000 \
        --csv runs/loadtest/kdgate --only-summary
"""
from __future__ import annotations

import itertools
import logging
import os
import random

from locust import FastHttpUser, LoadTestShape, between, events, task

MODEL = os.environ.get("KDGATE_MODEL", "mnist1d")
ROWS_PER_REQUEST = int(os.environ.get("KDGATE_ROWS_PER_REQUEST", "4"))
STEP_USERS = int(os.environ.get("KDGATE_STEP_USERS", "4"))
STEP_SECONDS = float(os.environ.get("KDGATE_STEP_SECONDS", "10"))
STEPS = int(os.environ.get("KDGATE_STEPS", "3"))
# Input drift (the demo's guard stage): every Nth feature moves by SHIFT x its standard deviation.
SHIFT_STD = float(os.environ.get("KDGATE_SHIFT_STD", "0"))
SHIFT_EVERY = int(os.environ.get("KDGATE_SHIFT_EVERY", "2"))
WAIT_MIN_S, WAIT_MAX_S = 0.01, 0.05

_user_ids = itertools.count()
TEXT_FILE = os.environ.get("KDGATE_TEXT_FILE", "")
_payload: dict = {"rows": None, "input": "input", "datatype": "FP32"}


def dataset_rows(width: int, n: int = 4096) -> list[list[float]]:
    """About ``n`` rows of the bundled dataset whose rows have ``width`` features.

    Thousands, not hundreds: the input-drift gate assumes independent rows, and a window
    that replays a few hundred rows over and over differs from the training reference by
    more than chance allows (measured: 150-row windows of a 408-row replay failed 4 % of
    healthy checks, a 4,000-row replay 0 %).
    """
    if width == 40:
        import numpy as np
        from mnist1d.data import get_dataset_args, make_dataset  # offline generator, no download

        args = get_dataset_args()
        args.num_samples, args.seed = n, 0
        data = make_dataset(args)
        x = np.concatenate([data["x"], data["x_test"]])
    elif width == 64:
        from sklearn.datasets import load_digits  # bundled with scikit-learn

        x = load_digits().data[:n] / 16.0
    else:
        raise ValueError(f"no bundled dataset has {width} features (MNIST-1D: 40, digits: 64)")
    return [[float(v) for v in row] for row in x]


@events.test_start.add_listener
def _load_payloads(environment, **_kwargs) -> None:
    """Ask the gateway for its input tensor, then load matching dataset rows (once per run)."""
    import json
    import urllib.request

    try:
        with urllib.request.urlopen(f"{environment.host}/v2/models/{MODEL}", timeout=10) as response:
            (tensor,) = json.loads(response.read())["inputs"]
        if tensor.get("datatype") == "BYTES":
            _payload.update(rows=text_rows(), input=tensor["name"], datatype="BYTES")
            return
        width = tensor["shape"][-1] if len(tensor["shape"]) > 1 else 40  # no shape declared: MNIST-1D
        _payload.update(rows=shifted(dataset_rows(width), SHIFT_STD, SHIFT_EVERY), input=tensor["name"])
    except (OSError, ValueError, KeyError) as err:
        logging.error("kdgate locustfile: cannot read model %r from %s: %s", MODEL, environment.host, err)
        environment.process_exit_code = 2
        environment.runner.quit()


def text_rows(n: int = 2000, chars: int = 300) -> list[str]:
    """The texts a text model gets: ``KDGATE_TEXT_FILE``'s JSON list, else real emails."""
    import json

    if TEXT_FILE:
        with open(TEXT_FILE, encoding="utf-8") as handle:
            return [t for t in json.load(handle) if t.strip()]
    from distill.textdata import read_spam_assassin

    texts, _labels = read_spam_assassin(None, chars)
    return [t for t in texts if t.strip()][:n]


def shifted(rows: list[list[float]], std: float, every: int = 2) -> list[list[float]]:
    """``rows`` with every ``every``-th feature moved by ``std`` x its standard deviation (0: unchanged)."""
    if not std:
        return rows
    from kdgate.demo.setup import shift_features

    return shift_features(rows, std, every).tolist()


def _batch() -> list[list[float]]:
    rows = _payload["rows"]
    start = random.randrange(len(rows) - ROWS_PER_REQUEST)
    return rows[start:start + ROWS_PER_REQUEST]


class _GatewayUser(FastHttpUser):
    abstract = True
    wait_time = between(WAIT_MIN_S, WAIT_MAX_S)

    def on_start(self) -> None:
        self.headers = {"x-user-id": f"locust-user-{next(_user_ids)}"}  # sticky for the user's life

    def _post(self, path: str, body: dict, name: str, rows_of) -> None:
        with self.client.post(path, json=body, headers=self.headers, name=name, catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}: {response.text[:200]}")
                return
            try:
                rows = rows_of(response.json())
            except (ValueError, KeyError, IndexError, TypeError) as err:
                response.failure(f"unexpected answer: {err}")
                return
            if rows != ROWS_PER_REQUEST:
                response.failure(f"{rows} output rows for {ROWS_PER_REQUEST} inputs")


class V2User(_GatewayUser):
    """Open Inference Protocol V2 JSON: ``POST /v2/models/{model}/infer``."""

    weight = 3

    @task
    def infer(self) -> None:
        batch = _batch()
        if _payload["datatype"] == "BYTES":
            body = {"inputs": [{"name": _payload["input"], "datatype": "BYTES", "shape": [len(batch), 1],
                                "data": batch}]}
        else:
            body = {"inputs": [{"name": _payload["input"], "datatype": "FP32", "shape": [len(batch), len(batch[0])],
                                "data": [v for row in batch for v in row]}]}
        self._post(f"/v2/models/{MODEL}/infer", body, "v2 infer", lambda a: a["outputs"][0]["shape"][0])


class V1User(_GatewayUser):
    """V1 JSON: ``POST /v1/models/{model}:predict`` with ``{"instances": [...]}``."""

    weight = 1

    @task
    def predict(self) -> None:
        self._post(f"/v1/models/{MODEL}:predict", {"instances": _batch()}, "v1 predict", lambda a: len(a["predictions"]))


class StepLoadShape(LoadTestShape):
    """``STEP_USERS`` more users every ``STEP_SECONDS``, ``STEPS`` times; then the test ends."""

    def tick(self):
        elapsed = self.get_run_time()
        if elapsed >= STEPS * STEP_SECONDS:
            return None
        users = STEP_USERS * (int(elapsed // STEP_SECONDS) + 1)
        return users, STEP_USERS
