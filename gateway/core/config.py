"""The gateway config: one pydantic model, validated once at the edge.

The same document is the Ray Serve ``user_config`` of the gateway deployment, so a
``serve deploy`` of an edited deployments file or an admin-API call changes it at run
time; :func:`load_gateway_config` rejects a bad change with a message naming each bad
field, and the previous config stays in force.

Example::

    cfg = load_gateway_config("deployments/local.yaml")   # or a dict
    cfg.routing.weights                                   # {"teacher": 95.0, "student": 5.0}
    cfg2 = cfg.with_weights({"teacher": 90, "student": 10})
    diff_config(cfg, cfg2)        # ["routing.weights.student: 5.0 -> 10.0", ...]
"""
from __future__ import annotations

import math
import pathlib
from collections.abc import Mapping
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from gateway.core.errors import GatewayConfigError
from gateway.rollout.core.spec import RolloutSpec

WEIGHT_STEP = 0.1  # percent: the split's granularity
_WEIGHT_TOLERANCE = 1e-6
_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _raise_field_problems(problems: list[tuple[str, str]]) -> None:
    """Raise a pydantic error that carries ``(relative.path, problem)`` pairs.

    A model validator's error is located at the model itself; the pairs name the field
    inside it so :func:`load_gateway_config` can report ``full.path: problem``.
    """
    if problems:
        summary = "; ".join(f"{path}: {problem}" for path, problem in problems)
        raise PydanticCustomError(
            "invalid_fields", "{summary}", {"summary": summary, "problems": [list(p) for p in problems]}
        )


class TritonTarget(_Strict):
    """Where a ``triton`` backend's model lives."""

    url: str = Field(description="host:port of the Triton server, e.g. 127.0.0.1:8000 (HTTP) or :8001 (gRPC).")
    protocol: Literal["http", "grpc"] = Field("http", description="Client protocol tritonclient uses.")
    model_name: str = Field(description="Model name in the Triton model repository.")
    model_version: str = Field("", description="Model version; empty string = Triton's latest.")


class BatchingConfig(_Strict):
    """Dynamic batching in front of one backend (gateway.batching.EagerBatcher)."""

    enabled: bool = Field(False, description="Batch concurrent requests to this backend.")
    max_batch_size: int = Field(32, gt=0, description="Most requests in one batch.")
    wait_timeout_s: float = Field(
        0.002, ge=0, description="Longest wait for a batch to fill while requests keep arriving, seconds; "
                                 "a request that finds the queue empty never waits.")


class VariantConfig(_Strict):
    """One model the gateway can route to: the teacher or a student."""

    name: str = Field(pattern=_NAME_PATTERN, description="Variant name used in weights, headers and metrics.")
    role: Literal["teacher", "student"] = Field(description="Exactly one teacher; one or more students.")
    backend: Literal["onnx", "triton", "torch"] = Field(
        description="onnx: ONNX Runtime in the replica; triton: remote Triton server; torch: TorchScript file."
    )
    model_path: str | None = Field(
        None, description="Model file (.onnx or TorchScript .pt), a path or an s3://, gs://, http(s):// URI "
                          "(fetched once per replica, verified against the manifest's sha256); onnx/torch only.")
    manifest_path: str | None = Field(
        None, description="manifest.json written by `kdgate distill` (drift reference), a path or a URI; "
                          "for a URI model_path, default: the manifest.json beside it.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA when a GPU is present.")
    colocated: bool = Field(
        False, description="Serve this onnx model in-process in the ingress replica (no hop): a student runs "
                           "inline (microseconds), a teacher in a thread of its own, so it never blocks the "
                           "proxy path (inline too when its calls take under 0.2 ms). For CPU deployments; a GPU teacher keeps its own deployment.")
    threads: int = Field(1, ge=1, le=64, description="ONNX Runtime intra-op threads of an onnx model: a colocated "
                                                     "one's CPU budget inside the ingress replica, or its own "
                                                     "deployment's (a change restarts that deployment).")
    triton: TritonTarget | None = Field(None, description="Triton target; required when backend is triton.")
    timeout_s: float = Field(1.0, gt=0, description="A slower answer counts as a failure (student: fall back).")
    batching: BatchingConfig = Field(default_factory=BatchingConfig, description="Dynamic batching options.")
    usd_per_hour: float = Field(0.0, ge=0, description="Provisioned cost of one replica, USD per hour.")
    version: str = Field("1", description="Model version reported to clients and in metrics.")

    @model_validator(mode="after")
    def _backend_needs_its_target(self) -> VariantConfig:
        problems: list[tuple[str, str]] = []
        if self.backend in ("onnx", "torch") and not self.model_path:
            problems.append(("model_path", f"required when backend is {self.backend}"))
        if self.backend == "triton" and self.triton is None:
            problems.append(("triton", "required when backend is triton (url, model_name)"))
        if self.colocated and self.backend != "onnx":
            problems.append(("colocated", "only an onnx model can run in the ingress replica"))
        if self.colocated and self.batching.enabled:
            problems.append(("batching", "a colocated model answers each request in the ingress replica; "
                                         "dynamic batching needs its own deployment (colocated: false)"))
        _raise_field_problems(problems)
        return self


class RoutingConfig(_Strict):
    """The traffic split and how a request picks its variant."""

    weights: dict[str, float] = Field(
        description="Percent of traffic per variant name, multiples of 0.1, summing to 100; missing = 0."
    )
    sticky_header: str | None = Field(
        "x-user-id", description="Header whose value pins a user to a variant (consistent hashing); null = off."
    )
    allow_force: bool = Field(False, description="Honour force_header (QA); keep off in production.")
    force_header: str = Field("x-kdgate-force-variant", description="Header naming the variant to force.")

    @model_validator(mode="after")
    def _weights_are_a_split(self) -> RoutingConfig:
        problems = [(f"weights.{name}", p) for name, w in self.weights.items() if (p := _weight_problem(w))]
        total = sum(self.weights.values())
        if not problems and abs(total - 100.0) > _WEIGHT_TOLERANCE:
            problems.append(("weights", f"must sum to 100, got {total:g}"))
        _raise_field_problems(problems)
        return self


def _weight_problem(weight: float) -> str | None:
    if not math.isfinite(weight) or not 0.0 <= weight <= 100.0:
        return f"must be between 0 and 100, got {weight:g}"
    steps = weight / WEIGHT_STEP
    if abs(steps - round(steps)) > _WEIGHT_TOLERANCE:
        return f"must be a multiple of {WEIGHT_STEP:g} percent, got {weight:g}"
    return None


class ShadowConfig(_Strict):
    """Background comparison traffic (the caller never waits for it)."""

    fraction: float = Field(0.0, ge=0, le=1, description="Share of teacher-served requests also sent to a student.")
    canary_compare_fraction: float = Field(
        0.1, ge=0, le=1, description="Share of student-served requests also answered by the teacher (compared)."
    )
    queue_size: int = Field(64, gt=0, description="Bounded shadow queue; work beyond it is dropped and counted.")
    timeout_s: float = Field(2.0, gt=0, description="A shadow answer later than this is dropped.")
    batch_window_s: float = Field(
        0.25, ge=0, le=5, description="Shadow requests to the teacher alone within this many seconds go to "
        "it as one batch: one model call (one hop to a remote teacher) instead of one per request. "
        "Comparisons lag by at most this; 0 sends each request alone. A student in shadow is always "
        "called per request (the latency gate judges its latency per request)."
    )
    max_batch_rows: int = Field(32, gt=0, description="A shadow batch goes at once when it holds this many rows.")
    regression_tolerance: float = Field(
        0.1, ge=0, description="Regression: pairs with absolute error above this disagree."
    )
    embedding_min_cosine: float = Field(
        0.95, ge=-1, le=1, description="Embeddings: pairs with cosine similarity below this disagree."
    )


class LimitsConfig(_Strict):
    """Request limits; beyond them the gateway answers 413."""

    max_batch_rows: int = Field(256, gt=0, description="Most rows in one inference request.")
    max_body_bytes: int = Field(8 * 1024 * 1024, gt=0, description="Largest request body, bytes.")
    max_text_bytes: int = Field(16384, gt=0, description="Longest text of a text model's request, UTF-8 bytes "
                                "(longer texts are refused with 413, not silently cut).")


class CaptureConfig(_Strict):
    """Where disagreeing pairs go (the loop back to distillation)."""

    enabled: bool = Field(True, description="Capture disagreeing teacher/student pairs.")
    dir: str = Field("kdgate-capture", description="Directory of the rotating .npz segments.")
    max_bytes: int = Field(256 * 1024 * 1024, gt=0, description="Disk bound; oldest segments are deleted past it.")
    segment_rows: int = Field(256, gt=0, description="Rows buffered in memory per segment file.")


class AdminConfig(_Strict):
    """Admin API authentication: a bearer token from an env var or a file (a Secret)."""

    token_env: str = Field("KDGATE_ADMIN_TOKEN", description="Environment variable holding the token.")
    token_file: str | None = Field(None, description="File holding the token (wins over token_env when set).")


class GatewayConfig(_Strict):
    """The whole gateway config (= the Ray Serve ``user_config`` of the gateway)."""

    model_name: str = Field(pattern=_NAME_PATTERN, description="Name clients use: /v2/models/{model_name}/infer.")
    task: Literal["classification", "regression", "embedding"] = Field(
        "classification", description="Output kind; picks how teacher and student answers are compared."
    )
    variants: list[VariantConfig] = Field(description="Exactly one teacher and at least one student.")
    routing: RoutingConfig = Field(description="Traffic split, sticky users and forcing.")
    shadow: ShadowConfig = Field(default_factory=ShadowConfig, description="Shadow comparison traffic.")
    limits: LimitsConfig = Field(default_factory=LimitsConfig, description="Request size limits.")
    capture: CaptureConfig = Field(default_factory=CaptureConfig, description="Disagreement capture store.")
    admin: AdminConfig = Field(default_factory=AdminConfig, description="Admin API authentication.")
    audit_log: str = Field("kdgate-audit.jsonl", description="Path of the JSON-lines audit log.")
    split_state_path: str | None = Field(
        None, description="SQLite change log of the split and config overlays that every Gateway replica "
                          "converges to (a volume on k8s); null = split-state.sqlite next to audit_log.",
    )
    rollout: RolloutSpec | None = Field(None, description="Automated rollout policy; null = manual split.")

    @model_validator(mode="after")
    def _variants_fit_together(self) -> GatewayConfig:
        problems: list[tuple[str, str]] = []
        names = [v.name for v in self.variants]
        for name in sorted({n for n in names if names.count(n) > 1}):
            problems.append(("variants", f"duplicate variant name {name!r}"))
        roles = [v.role for v in self.variants]
        if roles.count("teacher") != 1:
            problems.append(("variants", f"need exactly one teacher, got {roles.count('teacher')}"))
        if roles.count("student") < 1:
            problems.append(("variants", "need at least one student"))
        for name in self.routing.weights:
            if name not in names:
                problems.append((f"routing.weights.{name}", f"no such variant (variants: {', '.join(names)})"))
        problems += self._rollout_problems()
        _raise_field_problems(problems)
        return self

    def _rollout_problems(self) -> list[tuple[str, str]]:
        if self.rollout is None:
            return []
        students = [v.name for v in self.variants if v.role == "student"]
        if self.rollout.student is None and len(students) > 1:
            return [("rollout.student", f"required with more than one student ({', '.join(students)})")]
        if self.rollout.student is not None and self.rollout.student not in students:
            return [("rollout.student", f"no such student {self.rollout.student!r} (students: {', '.join(students)})")]
        return []

    @property
    def rollout_student(self) -> str | None:
        """The student the rollout moves traffic to (None without a rollout policy)."""
        if self.rollout is None:
            return None
        return self.rollout.student or self.students[0].name

    @property
    def split_state_file(self) -> str:
        """Where the shared split/config change log lives (``split_state_path`` or next to the audit log)."""
        return self.split_state_path or str(pathlib.PurePath(self.audit_log).with_name("split-state.sqlite"))

    @property
    def teacher(self) -> VariantConfig:
        """The one teacher variant."""
        return next(v for v in self.variants if v.role == "teacher")

    @property
    def students(self) -> list[VariantConfig]:
        """The student variants, in config order."""
        return [v for v in self.variants if v.role == "student"]

    def variant(self, name: str) -> VariantConfig:
        """The variant called ``name`` (KeyError when there is none)."""
        for v in self.variants:
            if v.name == name:
                return v
        raise KeyError(name)

    def effective_weights(self) -> dict[str, float]:
        """Weight per variant, every variant present (unlisted ones get 0)."""
        return {v.name: float(self.routing.weights.get(v.name, 0.0)) for v in self.variants}

    def with_weights(self, weights: Mapping[str, float]) -> GatewayConfig:
        """A validated copy with a new split (raises GatewayConfigError)."""
        data = self.model_dump(mode="json")
        data["routing"]["weights"] = dict(weights)
        return load_gateway_config(data)


def merge_overlay(base: dict, overlay: dict) -> dict:
    """``base`` with ``overlay`` merged in: nested dicts merge, other values replace.

    >>> merge_overlay({"routing": {"weights": {"t": 95, "s": 5}, "allow_force": False}},
    ...               {"routing": {"weights": {"t": 90, "s": 10}}})
    {'routing': {'weights': {'t': 90, 's': 10}, 'allow_force': False}}
    """
    merged = dict(base)
    for key, value in overlay.items():
        if key == "weights" or not (isinstance(value, dict) and isinstance(merged.get(key), dict)):
            merged[key] = value  # a split replaces the old one whole: absent variants mean 0
        else:
            merged[key] = merge_overlay(merged[key], value)
    return merged


def config_json_schema() -> dict:
    """JSON Schema of the gateway config, generated from the model (for YAML editors)."""
    return GatewayConfig.model_json_schema()


def load_gateway_config(source: str | pathlib.Path | Mapping[str, Any]) -> GatewayConfig:
    """Validate a gateway config from a YAML file path or a dict.

    A deployments file (``applications: [{args/user_config: ...}]``) is not unwrapped
    here; pass the gateway section. Raises :class:`GatewayConfigError` whose message has
    one ``field.path: problem`` line per bad field.

    >>> load_gateway_config({"model_name": "m"})  # doctest: +SKIP
    GatewayConfigError: invalid gateway config:
    variants: field required
    routing: field required
    """
    data = _read_source(source)
    try:
        return GatewayConfig.model_validate(data)
    except ValidationError as err:
        raise GatewayConfigError(_problems_of(err)) from err


def _read_source(source: str | pathlib.Path | Mapping[str, Any]) -> Mapping[str, Any]:
    if isinstance(source, Mapping):
        return source
    path = pathlib.Path(source)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as err:
        raise GatewayConfigError([("", f"cannot read {path}: {err.strerror or err}")]) from err
    except yaml.YAMLError as err:
        raise GatewayConfigError([("", f"{path} is not valid YAML: {err}")]) from err
    if not isinstance(data, Mapping):
        raise GatewayConfigError([("", f"{path} must hold a mapping, got {type(data).__name__}")])
    return data


def _problems_of(err: ValidationError) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    for e in err.errors():
        base = ".".join(str(part) for part in e["loc"])
        if e["type"] == "invalid_fields":
            for sub, problem in e["ctx"]["problems"]:
                problems.append((".".join(p for p in (base, sub) if p), problem))
        elif e["type"] == "extra_forbidden":
            problems.append((base, "unknown field"))
        else:
            problems.append((base, e["msg"]))
    return problems


def config_changes(old: GatewayConfig, new: GatewayConfig) -> list[tuple[str, Any, Any]]:
    """``(field.path, old value, new value)`` for every changed leaf, sorted by path.

    Variants are keyed by name, so reordering them is no change; a field only one side
    has shows ``"<absent>"`` on the other.
    """
    before, after = _flatten(_keyed(old)), _flatten(_keyed(new))
    return [
        (path, before.get(path, _ABSENT), after.get(path, _ABSENT))
        for path in sorted(before.keys() | after.keys())
        if before.get(path, _ABSENT) != after.get(path, _ABSENT)
    ]


def diff_config(old: GatewayConfig, new: GatewayConfig) -> list[str]:
    """Human-readable changes between two configs, for the audit log.

    >>> diff_config(cfg, cfg.with_weights({"teacher": 90, "student": 10}))  # doctest: +SKIP
    ['routing.weights.student: 5.0 -> 10.0', 'routing.weights.teacher: 95.0 -> 90.0']
    """
    return [f"{path}: {a} -> {b}" for path, a, b in config_changes(old, new)]


_ABSENT = "<absent>"


def _keyed(cfg: GatewayConfig) -> dict:
    data = cfg.model_dump(mode="json")
    data["variants"] = {v["name"]: v for v in data["variants"]}
    return data


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict) and value:
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: value}
