"""No body, however broken, makes the parsers raise anything but a 4xx BadRequest (never a 500)."""
from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.core.errors import BadRequest
from gateway.http import api
from gateway.http.admin import json_object

SPEC = api.TensorSpec(feature_shape=(4,), max_rows=64)
TENSOR = {"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}


def _parsers(body: bytes):
    yield lambda: api.parse_v1_request(body, spec=SPEC)
    yield lambda: api.parse_v2_request(body, header_length=None, spec=SPEC)
    yield lambda: api.parse_v2_request(body, header_length=str(max(1, len(body) // 2)), spec=SPEC)
    yield lambda: json_object(body)


def _only_bad_requests(body: bytes) -> None:
    for parse in _parsers(body):
        try:
            parse()
        except BadRequest as err:
            assert 400 <= err.status < 500 and err.message
        # anything else propagates and fails the test: the gateway would answer 500


# Bodies found to escape as a 500 before (RecursionError, ValueError, AttributeError, TypeError).
REGRESSIONS = [
    b"[" * 100_000,
    b'{"instances": [[' + b"9" * 5000 + b",1,1,1]]}",
    json.dumps({"inputs": [TENSOR], "outputs": [{"parameters": 5}]}).encode(),
    json.dumps({"inputs": [TENSOR], "outputs": [5]}).encode(),
    json.dumps({"inputs": [TENSOR], "outputs": {"name": "logits"}}).encode(),
    json.dumps({"inputs": [TENSOR], "parameters": 5}).encode(),
    json.dumps({"inputs": [{**TENSOR, "shape": [True, 4]}]}).encode(),
    b"\xff\xfe\x00", b"\xef\xbb\xbf{}", b'{"instances": [[NaN, Infinity, 1e999, 1]]}',
]


@pytest.mark.parametrize("body", REGRESSIONS, ids=range(len(REGRESSIONS)))
def test_known_pathological_bodies_are_4xx(body):
    _only_bad_requests(body)


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
                    max_leaves=20)
FIELDS = st.fixed_dictionaries({}, optional={"name": JSON | st.just("input"), "shape": JSON | st.just([1, 4]),
                                             "datatype": JSON | st.just("FP32"), "data": JSON,
                                             "parameters": JSON | st.just({"binary_data_size": 16})})


@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_arbitrary_bytes_are_4xx(body):
    _only_bad_requests(body)


@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(tensor=FIELDS, extra=st.dictionaries(st.sampled_from(["id", "outputs", "parameters"]), JSON, max_size=3),
       instances=JSON, cut=st.integers(min_value=0, max_value=400))
def test_json_shaped_bodies_and_their_truncations_are_4xx(tensor, extra, instances, cut):
    for doc in ({"inputs": [tensor], **extra}, {"instances": instances}):
        body = json.dumps(doc).encode()
        _only_bad_requests(body)
        _only_bad_requests(body[:cut])
