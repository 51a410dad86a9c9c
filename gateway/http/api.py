"""Wire formats: Open Inference Protocol V2 (JSON and binary extension) and V1 predict.

Pure functions from bytes to a validated float32 batch and back; no Ray, no FastAPI.
Every client mistake raises a :class:`~gateway.core.errors.BadRequest` subclass whose
message names the problem, so the HTTP layer answers 4xx and never 5xx.

Example::

    spec = TensorSpec(feature_shape=(40,), max_rows=256)
    request = parse_v2_request(body, header_length=None, spec=spec)
    body, headers = encode_v2_response(logits, request, model_name="m", model_version="1")
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np

from gateway.core.errors import InvalidInput, MalformedRequest, PayloadTooLarge
from gateway.core.manifest import INPUT_NAME, OUTPUT_NAME
from gateway.text import BYTES, TextBatch, check_texts, decode_bytes_tensor, json_texts, text_rows

HEADER_LENGTH = "Inference-Header-Content-Length"


@dataclass(frozen=True)
class TensorSpec:
    """What the served model accepts: rows of ``feature_shape`` float32, at most ``max_rows``.

    ``feature_shape`` is None when no variant declares it (then any row shape passes and
    the backend has the last word).
    """

    feature_shape: tuple[int, ...] | None
    max_rows: int
    text: bool = False  # the model takes texts (V2 BYTES, V1 strings), not float tensors
    max_text_bytes: int = 16384


@dataclass(frozen=True)
class V2Request:
    """A parsed V2 inference request: the batch plus how the client wants the answer."""

    x: np.ndarray | TextBatch
    request_id: str
    binary_output: bool
    output_name: str = OUTPUT_NAME


def check_body_size(body: bytes, max_body_bytes: int) -> None:
    """Reject a body over the configured size limit (413)."""
    if len(body) > max_body_bytes:
        raise PayloadTooLarge(
            f"body is {len(body)} bytes, over the limit of {max_body_bytes} bytes "
            "(limits.max_body_bytes)"
        )


def load_json(raw: bytes) -> object:
    """``raw`` as JSON; every way it can fail is a 400 naming the problem (never a 500).

    ``ValueError`` covers malformed JSON, bad UTF-8 and integers over Python's 4300-digit
    limit; ``RecursionError`` a pathologically deep nesting (``[[[[...``).
    """
    try:
        return json.loads(raw)
    except RecursionError as err:
        raise MalformedRequest("malformed JSON: nested too deeply") from err
    except ValueError as err:  # JSONDecodeError, UnicodeDecodeError, int digit limit
        raise MalformedRequest(f"malformed JSON: {err}") from err


def _header_length(value: str | None, body_len: int) -> int | None:
    if value is None:
        return None
    try:
        length = int(value)
    except ValueError as err:
        raise MalformedRequest(f"{HEADER_LENGTH} must be an integer, got {value!r}") from err
    if not 0 < length <= body_len:
        raise MalformedRequest(f"{HEADER_LENGTH}={length} does not fit a {body_len}-byte body")
    return length


def parse_v2_request(body: bytes, *, header_length: str | None, spec: TensorSpec) -> V2Request:
    """Parse a V2 ``/infer`` body (JSON, or JSON header + binary tensors) into a batch."""
    length = _header_length(header_length, len(body))
    head = load_json(body[:length] if length else body)
    if not isinstance(head, dict) or not isinstance(head.get("inputs"), list):
        raise MalformedRequest("V2 request must be a JSON object with an 'inputs' list")
    inputs = head["inputs"]
    if len(inputs) != 1:
        raise InvalidInput(f"expected exactly one input named {INPUT_NAME!r}, got {len(inputs)}")
    tensor = inputs[0]
    if not isinstance(tensor, dict):
        raise MalformedRequest("each entry of 'inputs' must be a JSON object")
    if tensor.get("name") != INPUT_NAME:
        raise InvalidInput(f"unknown input {tensor.get('name')!r}; the model's input is {INPUT_NAME!r}")
    expected = BYTES if spec.text else "FP32"
    if tensor.get("datatype") != expected:
        raise InvalidInput(f"wrong dtype: input datatype is {tensor.get('datatype')!r}; expected {expected!r}"
                           + (" (this model takes text)" if spec.text else ""))
    shape = _shape(tensor.get("shape"))
    binary = body[length:] if length else b""
    if spec.text:
        x = _v2_text_data(tensor, shape, binary, spec)
    else:
        x = _v2_tensor_data(tensor, shape, binary)
        validate_batch(x, spec)
    return V2Request(
        x=x, request_id=str(head.get("id", "")), binary_output=_wants_binary(head),
        output_name=_requested_output(head),
    )


def _shape(raw: object) -> tuple[int, ...]:
    if not isinstance(raw, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in raw):
        raise InvalidInput(f"wrong shape: 'shape' must be a list of non-negative integers, got {raw!r}")
    return tuple(raw)


def _v2_tensor_data(tensor: dict, shape: tuple[int, ...], binary: bytes) -> np.ndarray:
    count = math.prod(shape)
    params = _object(tensor.get("parameters"), "inputs[0].parameters")
    if "binary_data_size" in params:
        size = params["binary_data_size"]
        if size != len(binary) or size != count * 4:
            raise InvalidInput(
                f"wrong shape: binary_data_size {size} with {len(binary)} bytes sent does not "
                f"match shape {list(shape)} of FP32 ({count * 4} bytes)"
            )
        return np.frombuffer(binary, dtype="<f4").reshape(shape)
    if binary:
        raise MalformedRequest("binary data after the JSON header but no binary_data_size parameter")
    if "data" not in tensor:
        raise MalformedRequest(f"input {INPUT_NAME!r} has neither 'data' nor binary_data_size")
    x = _numeric_array(tensor["data"], where="data")
    if x.size != count:
        raise InvalidInput(f"wrong shape: {x.size} values in 'data' do not fill shape {list(shape)}")
    return x.reshape(shape)


def _v2_text_data(tensor: dict, shape: tuple[int, ...], binary: bytes, spec: TensorSpec) -> TextBatch:
    """A BYTES input: binary (Triton's length-prefixed encoding) or JSON strings, checked."""
    rows = text_rows(shape)
    if rows > spec.max_rows:  # before decoding anything
        raise PayloadTooLarge(f"batch of {rows} texts is over the limit of {spec.max_rows} (limits.max_batch_rows)")
    params = _object(tensor.get("parameters"), "inputs[0].parameters")
    if "binary_data_size" in params:
        if params["binary_data_size"] != len(binary):
            raise InvalidInput(f"binary_data_size {params['binary_data_size']} does not match the "
                               f"{len(binary)} bytes sent")
        raw = decode_bytes_tensor(binary, rows)
    elif binary:
        raise MalformedRequest("binary data after the JSON header but no binary_data_size parameter")
    elif "data" not in tensor:
        raise MalformedRequest(f"input {INPUT_NAME!r} has neither 'data' nor binary_data_size")
    else:
        raw = json_texts(tensor["data"], rows)
    return check_texts(raw, max_rows=spec.max_rows, max_text_bytes=spec.max_text_bytes)


def _numeric_array(data: object, *, where: str) -> np.ndarray:
    """Nested JSON numbers -> float32 array; strings, bools, nulls or ragged rows -> 422.

    numpy infers the dtype in C (fast); only int and float kinds are numbers here
    (a string column would otherwise be parsed silently by ``astype``).
    """
    try:
        array = np.asarray(data)
    except ValueError as err:  # ragged nesting
        raise InvalidInput(f"wrong shape: {where} is ragged ({err})") from err
    if array.dtype.kind not in "if":
        raise InvalidInput(
            f"wrong dtype: {where} holds {array.dtype.name} values; expected numbers (FP32)"
        )
    return array.astype(np.float32)


def validate_batch(x: np.ndarray, spec: TensorSpec) -> None:
    """Check a decoded batch: rows present, under the limit, the right shape, finite values."""
    if x.ndim < 2:
        raise InvalidInput(f"wrong shape: expected [batch, features...], got {list(x.shape)}")
    rows = x.shape[0]
    if rows == 0:
        raise InvalidInput("empty batch: the request holds no rows")
    if rows > spec.max_rows:
        raise PayloadTooLarge(
            f"batch of {rows} rows is over the limit of {spec.max_rows} (limits.max_batch_rows)"
        )
    if spec.feature_shape is not None and tuple(x.shape[1:]) != spec.feature_shape:
        raise InvalidInput(
            f"wrong shape: rows have shape {list(x.shape[1:])}; the model expects "
            f"{list(spec.feature_shape)}"
        )
    if not np.isfinite(x).all():
        raise InvalidInput("input holds NaN or Inf; send finite numbers only")


def _object(value: object, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise MalformedRequest(f"'{where}' must be a JSON object, got {type(value).__name__}")
    return value


def _outputs(head: dict) -> list:
    outputs = head.get("outputs")
    if outputs is not None and not isinstance(outputs, list):
        raise MalformedRequest(f"'outputs' must be a list, got {type(outputs).__name__}")
    return outputs or []


def _wants_binary(head: dict) -> bool:
    outputs = _outputs(head)
    if outputs:
        params = _object(_object(outputs[0], "outputs[0]").get("parameters"), "outputs[0].parameters")
        return bool(params.get("binary_data", False))
    return bool(_object(head.get("parameters"), "parameters").get("binary_data_output", False))


def _requested_output(head: dict) -> str:
    outputs = _outputs(head)
    if not outputs:
        return OUTPUT_NAME
    name = _object(outputs[0], "outputs[0]").get("name")
    if len(outputs) != 1 or name != OUTPUT_NAME:
        raise InvalidInput(f"unknown output {name!r}; the model's only output is {OUTPUT_NAME!r}")
    return name


def encode_v2_response(
    y: np.ndarray, request: V2Request, *, model_name: str, model_version: str
) -> tuple[bytes, dict[str, str]]:
    """V2 response body and extra headers (binary extension when the client asked for it)."""
    y = np.ascontiguousarray(y, dtype=np.float32)
    output: dict = {"name": request.output_name, "datatype": "FP32", "shape": list(y.shape)}
    head = {"model_name": model_name, "model_version": model_version, "outputs": [output]}
    if request.request_id:
        head["id"] = request.request_id
    if not request.binary_output:
        output["data"] = y.reshape(-1).tolist()
        return json.dumps(head).encode(), {}
    raw = y.astype("<f4").tobytes()
    output["parameters"] = {"binary_data_size": len(raw)}
    header = json.dumps(head).encode()
    return header + raw, {HEADER_LENGTH: str(len(header))}


def parse_v1_request(body: bytes, *, spec: TensorSpec) -> np.ndarray | TextBatch:
    """Parse ``{"instances": [...]}`` (each instance one row, or one text) into a batch."""
    doc = load_json(body)
    if not isinstance(doc, dict) or "instances" not in doc:
        raise MalformedRequest('V1 request must be a JSON object {"instances": [...]}')
    instances = doc["instances"]
    if not isinstance(instances, list):
        raise MalformedRequest("'instances' must be a list of rows")
    if not instances:
        raise InvalidInput("empty batch: 'instances' is empty")
    if spec.text:
        return check_texts(instances, max_rows=spec.max_rows, max_text_bytes=spec.max_text_bytes)
    x = _numeric_array(instances, where="instances")
    validate_batch(x, spec)
    return x


def encode_v1_response(y: np.ndarray) -> bytes:
    """``{"predictions": [...]}`` with one list of outputs per instance."""
    return json.dumps({"predictions": np.asarray(y, dtype=np.float32).tolist()}).encode()
