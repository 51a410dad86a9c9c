"""GatewayConfig: validation names the field; diff for the audit log; JSON Schema."""
from __future__ import annotations

import copy

import pytest
import yaml

from gateway.core.config import (
    GatewayConfig,
    config_json_schema,
    diff_config,
    load_gateway_config,
)
from gateway.core.errors import GatewayConfigError

BASE = {
    "model_name": "digits",
    "variants": [
        {"name": "teacher", "role": "teacher", "backend": "onnx", "model_path": "teacher.onnx"},
        {"name": "student", "role": "student", "backend": "onnx", "model_path": "student.onnx", "colocated": True},
    ],
    "routing": {"weights": {"teacher": 95, "student": 5}},
}


def _with(**changes) -> dict:
    """BASE with dotted-path changes applied, e.g. _with(**{"routing.weights": {...}})."""
    data = copy.deepcopy(BASE)
    for path, value in changes.items():
        *parents, leaf = path.split(".")
        node = data
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
        if isinstance(node, list):
            node[int(leaf)] = value
        else:
            node[leaf] = value
    return data


def _problems(data) -> str:
    with pytest.raises(GatewayConfigError) as info:
        load_gateway_config(data)
    return str(info.value)


def test_valid_config_loads_with_defaults():
    cfg = load_gateway_config(BASE)
    assert cfg.teacher.name == "teacher"
    assert [s.name for s in cfg.students] == ["student"]
    assert cfg.routing.sticky_header == "x-user-id"
    assert cfg.effective_weights() == {"teacher": 95.0, "student": 5.0}


def test_loads_from_yaml_path(tmp_path):
    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump(BASE))
    assert load_gateway_config(path).model_name == "digits"
    assert load_gateway_config(str(path)).variant("student").colocated


@pytest.mark.parametrize(
    ("weights", "expected"),
    [
        ({"teacher": 95, "student": 5.05}, "routing.weights.student: must be a multiple of 0.1"),
        ({"teacher": 90, "student": 5}, "routing.weights: must sum to 100, got 95"),
        ({"teacher": 110, "student": -10}, "routing.weights.teacher: must be between 0 and 100"),
        ({"teacher": 95, "ghost": 5}, "routing.weights.ghost: no such variant"),
    ],
)
def test_bad_weights_name_the_field(weights, expected):
    assert expected in _problems(_with(**{"routing.weights": weights}))


def test_fine_weights_are_accepted():
    cfg = load_gateway_config(_with(**{"routing.weights": {"teacher": 99.9, "student": 0.1}}))
    assert cfg.routing.weights["student"] == pytest.approx(0.1)
    cfg = load_gateway_config(_with(**{"routing.weights": {"teacher": 100}}))
    assert cfg.effective_weights()["student"] == 0.0


def test_exactly_one_teacher_and_unique_names():
    two_teachers = _with(**{"variants.1.role": "teacher", "variants.1.colocated": False})
    assert "variants: need exactly one teacher, got 2" in _problems(two_teachers)
    assert "variants: need at least one student" in _problems(two_teachers)
    same_name = _with(**{"variants.1.name": "teacher"})
    assert "variants: duplicate variant name 'teacher'" in _problems(same_name)


def test_backend_targets_are_required():
    no_path = _with(**{"variants.0": {"name": "teacher", "role": "teacher", "backend": "torch"}})
    assert "variants.0.model_path: required when backend is torch" in _problems(no_path)
    no_triton = _with(**{"variants.0": {"name": "teacher", "role": "teacher", "backend": "triton"}})
    assert "variants.0.triton: required when backend is triton" in _problems(no_triton)
    triton_ok = _with(
        **{"variants.0": {"name": "teacher", "role": "teacher", "backend": "triton",
                          "triton": {"url": "127.0.0.1:8001", "protocol": "grpc", "model_name": "kdgate-teacher"}}}
    )
    assert load_gateway_config(triton_ok).teacher.triton.protocol == "grpc"


def test_an_onnx_teacher_colocates_without_batching_and_a_triton_one_does_not():
    teacher = load_gateway_config(_with(**{"variants.0.colocated": True, "variants.0.threads": 2})).teacher
    assert teacher.colocated and teacher.threads == 2
    batching = _with(**{"variants.0.colocated": True, "variants.0.batching": {"enabled": True}})
    assert "variants.0.batching: a colocated model answers each request" in _problems(batching)
    triton = _with(**{"variants.0": {"name": "teacher", "role": "teacher", "backend": "triton", "colocated": True,
                                     "triton": {"url": "127.0.0.1:8001", "model_name": "kdgate-teacher"}}})
    assert "variants.0.colocated: only an onnx model" in _problems(triton)


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("shadow.fraction", 1.5, "shadow.fraction: Input should be less than or equal to 1"),
        ("shadow.canary_compare_fraction", -0.1, "shadow.canary_compare_fraction: Input should be greater"),
        ("limits.max_batch_rows", 0, "limits.max_batch_rows: Input should be greater than 0"),
        ("capture.max_bytes", -5, "capture.max_bytes: Input should be greater than 0"),
        ("variants.1.timeout_s", 0, "variants.1.timeout_s: Input should be greater than 0"),
        ("routing.colour", "blue", "routing.colour: unknown field"),
    ],
)
def test_field_constraints_name_the_field(path, value, expected):
    assert expected in _problems(_with(**{path: value}))


def test_every_bad_field_is_listed_on_its_own_line():
    data = _with(**{"shadow.fraction": 2, "limits.max_body_bytes": 0, "routing.weights": {"teacher": 50}})
    lines = _problems(data).splitlines()[1:]
    assert sorted(line.split(":")[0] for line in lines) == [
        "limits.max_body_bytes", "routing.weights", "shadow.fraction",
    ]


def test_unreadable_and_non_mapping_yaml(tmp_path):
    assert "cannot read" in _problems(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    assert "must hold a mapping" in _problems(bad)


def test_with_weights_validates():
    cfg = load_gateway_config(BASE)
    assert cfg.with_weights({"teacher": 75, "student": 25}).routing.weights["student"] == 25
    with pytest.raises(GatewayConfigError, match="routing.weights: must sum to 100"):
        cfg.with_weights({"teacher": 75, "student": 20})


def test_diff_config_lists_changed_fields_by_variant_name():
    old = load_gateway_config(BASE)
    new_data = _with(**{"routing.weights": {"teacher": 90, "student": 10}, "shadow.fraction": 0.1})
    new_data["variants"][1]["timeout_s"] = 0.25
    new_data["variants"].reverse()  # order is no change
    changes = diff_config(old, load_gateway_config(new_data))
    assert changes == [
        "routing.weights.student: 5.0 -> 10.0",
        "routing.weights.teacher: 95.0 -> 90.0",
        "shadow.fraction: 0.0 -> 0.1",
        "variants.student.timeout_s: 1.0 -> 0.25",
    ]
    assert diff_config(old, old) == []


def test_json_schema_is_generated_from_the_model():
    schema = config_json_schema()
    assert schema == GatewayConfig.model_json_schema()
    assert set(schema["required"]) >= {"model_name", "variants", "routing"}
    assert schema["additionalProperties"] is False
    assert "description" in schema["properties"]["audit_log"]


def test_rollout_student_must_be_a_student():
    assert load_gateway_config(_with(rollout={"steps": ["shadow", 5, 100]})).rollout_student == "student"
    assert "rollout.student: no such student 'teacher'" in _problems(_with(rollout={"student": "teacher"}))
    three = _with(rollout={})
    three["variants"].append({"name": "s2", "role": "student", "backend": "onnx", "model_path": "s2.onnx"})
    assert "rollout.student: required with more than one student" in _problems(three)
