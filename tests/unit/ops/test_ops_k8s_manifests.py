"""k8s/: every overlay renders with `kubectl kustomize`, and every rendered object validates.

Core kinds go through kubernetes-validate (strict: unknown fields fail); custom resources
through the CRD schemas in ../shared/schemas/crds/ (test data, not part of the project),
with unknown fields rejected too (the API server would silently prune them). The
RayService's serveConfigV2 must parse into Ray Serve's schema and the gateway's config.
"""
from __future__ import annotations

import functools

import jsonschema
import pytest
import yaml
from k8s_fixtures import OVERLAYS, ROOT, of_kind, ray_pod_templates, render

from gateway.core.errors import GatewayConfigError
from kdgate.ops import generate
from kdgate.ops.dashboards import build_dashboard
from kdgate.ops.k8s import k8s_serve_config, parse_serve_config_v2

CRDS = ROOT.parent / "shared" / "schemas" / "crds"
CORE_GROUPS = {"v1", "networking.k8s.io/v1", "apps/v1"}
DASHBOARD_PORT = 8265


def _closed(schema: dict) -> dict:
    """The schema with unknown fields rejected wherever the CRD lists its properties."""
    if isinstance(schema, list):
        return [_closed(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    closed = {k: _closed(v) for k, v in schema.items()}
    if "properties" in schema and "additionalProperties" not in schema \
            and not schema.get("x-kubernetes-preserve-unknown-fields"):
        closed["additionalProperties"] = False
    return closed


@functools.lru_cache(maxsize=None)
def crd_schemas() -> dict[tuple[str, str], dict]:
    """``(apiVersion, kind) -> closed openAPIV3Schema`` from the shared CRD copies."""
    if not CRDS.is_dir():
        pytest.skip(f"CRD schemas not found at {CRDS} (the shared test data)")
    schemas = {}
    for path in CRDS.glob("*.yaml"):
        for crd in yaml.safe_load_all(path.read_text()):
            spec = crd["spec"]
            for version in spec["versions"]:
                key = (f"{spec['group']}/{version['name']}", spec["names"]["kind"])
                schemas[key] = _closed(version["schema"]["openAPIV3Schema"])
    return schemas


def validate(obj: dict) -> None:
    """Raise when ``obj`` is not a valid object of its kind."""
    if obj["apiVersion"] in CORE_GROUPS:
        import kubernetes_validate
        from kubernetes_validate.utils import latest_version

        kubernetes_validate.validate(obj, latest_version(), strict=True)
        return
    schema = crd_schemas().get((obj["apiVersion"], obj["kind"]))
    assert schema is not None, f"no schema for {obj['apiVersion']} {obj['kind']}"
    # No check_schema: CRDs carry Go regexes such as '^(?i)(abort|warn)?$' that Python's re
    # rejects as a pattern; they only matter for fields these manifests do not set.
    jsonschema.Draft202012Validator(schema).validate(obj)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_rendered_object_validates(overlay):
    objects = render(overlay)
    kinds = sorted({o["kind"] for o in objects})
    assert kinds == ["ConfigMap", "Namespace", "NetworkPolicy", "PersistentVolumeClaim", "PodMonitor",
                     "PrometheusRule", "RayService", "Secret"]
    for obj in objects:
        validate(obj)
        assert obj["metadata"].get("namespace", "kdgate") == "kdgate"


def test_the_validators_reject_typos():
    rayservice = of_kind(render("cpu"), "RayService")[0]
    broken = {**rayservice, "spec": {**rayservice["spec"], "serveConfigv2": "x"}}
    with pytest.raises(jsonschema.ValidationError, match="serveConfigv2"):
        validate(broken)
    secret = of_kind(render("cpu"), "Secret")[0]
    with pytest.raises(Exception, match="strngData"):
        validate({**secret, "strngData": {}})


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_serve_config_v2_is_the_gateway_config_from_deployments(overlay):
    rayservice = of_kind(render(overlay), "RayService")[0]
    text = rayservice["spec"]["serveConfigV2"]
    (config,) = parse_serve_config_v2(text)
    assert yaml.safe_load(text) == k8s_serve_config(ROOT / generate.SOURCE, profile=overlay)
    assert config.routing.weights == {"teacher": 95.0, "student": 5.0}  # canary-5's user_config overlay
    assert config.admin.token_file == "/etc/kdgate/admin/token"
    assert all(v.model_path.startswith("/models/") for v in config.variants)
    assert config.capture.dir.startswith("/var/lib/kdgate/")
    assert config.teacher.device == ("cuda" if overlay == "gpu" else "cpu")


def test_gpu_overlay_puts_the_teacher_on_a_gpu_worker():
    rayservice = of_kind(render("gpu"), "RayService")[0]
    groups = {g["groupName"]: g for g in rayservice["spec"]["rayClusterConfig"]["workerGroupSpecs"]}
    (container,) = groups["gpu"]["template"]["spec"]["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["image"].endswith("-gpu")
    serve = yaml.safe_load(rayservice["spec"]["serveConfigV2"])
    teacher = next(d for d in serve["applications"][0]["deployments"] if d["name"] == "model-teacher")
    assert teacher["ray_actor_options"]["num_gpus"] == 1
    cpu = of_kind(render("cpu"), "RayService")[0]["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    assert [g["groupName"] for g in cpu] == ["cpu"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_nobody_reaches_the_ray_dashboard_from_outside(overlay):
    objects = render(overlay)
    assert not of_kind(objects, "Ingress") and not of_kind(objects, "Route")
    rayservice = of_kind(objects, "RayService")[0]
    services = [s["spec"] for s in of_kind(objects, "Service")] + [rayservice["spec"]["serveService"]["spec"]]
    assert [p["port"] for s in services for p in s["ports"]] == [8000]
    assert all(s.get("type", "ClusterIP") == "ClusterIP" for s in services)
    assert "headService" not in rayservice["spec"]["rayClusterConfig"]["headGroupSpec"]
    assert rayservice["spec"]["rayClusterConfig"]["authOptions"] == {"mode": "token"}
    (policy,) = of_kind(objects, "NetworkPolicy")
    open_rules = [r for r in policy["spec"]["ingress"] if "from" not in r]
    assert [p["port"] for r in open_rules for p in r["ports"]] == [8000]
    dashboard_rules = [r for r in policy["spec"]["ingress"]
                       if any(p["port"] == DASHBOARD_PORT for p in r.get("ports", []))]
    assert all(r["from"][0]["namespaceSelector"] for r in dashboard_rules)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pod_monitor_scrapes_every_ray_pod_and_the_volumes_are_mounted(overlay):
    objects = render(overlay)
    (monitor,) = of_kind(objects, "PodMonitor")
    wanted = monitor["spec"]["selector"]["matchLabels"]
    port = monitor["spec"]["podMetricsEndpoints"][0]["port"]
    claims = {p["metadata"]["name"] for p in of_kind(objects, "PersistentVolumeClaim")}
    for pod in ray_pod_templates(of_kind(objects, "RayService")[0]):
        assert wanted.items() <= pod["metadata"]["labels"].items()
        (container,) = pod["spec"]["containers"]
        assert port in {p["name"] for p in container["ports"]}
        volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
        assert {volumes[m]["persistentVolumeClaim"]["claimName"] for m in ("models", "state")} <= claims
        assert volumes["admin-token"]["secret"]["secretName"] == of_kind(objects, "Secret")[0]["metadata"]["name"]
        assert {m["mountPath"] for m in container["volumeMounts"]} == {"/models", "/var/lib/kdgate", "/etc/kdgate/admin", "/tmp"}


def test_dashboard_config_map_is_labelled_for_the_grafana_sidecar():
    import json

    (config_map,) = of_kind(render("cpu"), "ConfigMap")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(config_map["data"]["kdgate.json"]) == build_dashboard()
    (rule,) = of_kind(render("cpu"), "PrometheusRule")
    assert len(rule["spec"]["groups"][0]["rules"]) == 5


def test_generated_files_are_up_to_date():
    assert generate.check(ROOT) == [], "run `kdgate ops generate` and commit the result"


def test_a_bad_deployments_file_fails_naming_the_field(tmp_path):
    document = yaml.safe_load((ROOT / generate.SOURCE).read_text())
    document["applications"][0]["deployments"][0]["user_config"]["routing"]["weights"] = {"teacher": 90, "student": 5}
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(document))
    with pytest.raises(GatewayConfigError, match="routing.weights: must sum to 100"):
        k8s_serve_config(bad, profile="cpu")
    with pytest.raises(ValueError, match="profile must be one of"):
        k8s_serve_config(ROOT / generate.SOURCE, profile="tpu")
