"""k8s/ security, checked on the rendered overlays (issue 14 point 7, issue 11 point 5).

The NetworkPolicy is evaluated the way Kubernetes does (label selectors, namespace
selectors, ports) against the Ray pods *as KubeRay labels them*, so a selector that
misses the real pods, or admits a stranger to Ray's dashboard/job API, fails here.
"""
from __future__ import annotations

import re
import tomllib

import pytest
import yaml
from k8s_fixtures import OVERLAYS, ROOT, kuberay_pod_labels, of_kind, ray_pod_templates, render

from kdgate.ops.k8s import GATEWAY_DEPLOYMENT, GATEWAY_MIN_REPLICAS

NAMESPACE = "kdgate"
# Ray's ports as KubeRay starts Ray (its defaults) and as the templates declare them.
GCS, DASHBOARD, CLIENT, DASHBOARD_AGENT, METRICS, SERVE = 6379, 8265, 10001, 52365, 8080, 8000
RAY_INTERNAL = (GCS, DASHBOARD, CLIENT, DASHBOARD_AGENT)
# The KubeRay operator pod as its Helm chart labels it (release "kuberay-operator").
OPERATOR = ({"app.kubernetes.io/name": "kuberay-operator", "app.kubernetes.io/instance": "kuberay-operator",
             "app.kubernetes.io/component": "kuberay-operator"}, "kuberay-operator")
PROMETHEUS = ({"app.kubernetes.io/name": "prometheus"}, "monitoring")
STRANGER_HERE = ({"app": "debug-shell"}, NAMESPACE)
STRANGER_ELSEWHERE = ({"app": "web"}, "default")
WEBHOOK_BESIDE_OPERATOR = ({"app": "webhook"}, "kuberay-operator")
TOKEN_AUTH_SINCE = (2, 52)  # Ray's token authentication appeared in 2.52.0


def _selects(selector: dict, labels: dict[str, str]) -> bool:
    """A Kubernetes LabelSelector (matchLabels AND matchExpressions; {} selects everything)."""
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        ok = {"In": key in labels and labels[key] in values, "NotIn": labels.get(key) not in values,
              "Exists": key in labels, "DoesNotExist": key not in labels}[op]
        if not ok:
            return False
    return True


def _peer_matches(peer: dict, labels: dict[str, str], namespace: str) -> bool:
    if "ipBlock" in peer:
        return True  # an address range may hold anyone: count it as admitting everybody
    ns_labels = {"kubernetes.io/metadata.name": namespace}
    ns_ok = _selects(peer["namespaceSelector"], ns_labels) if "namespaceSelector" in peer else namespace == NAMESPACE
    return ns_ok and _selects(peer.get("podSelector", {}), labels)


def admits(policy: dict, source: tuple[dict[str, str], str], port: int) -> bool:
    """Whether ``policy``'s ingress rules let a pod (labels, namespace) reach ``port``."""
    labels, namespace = source
    for rule in policy["spec"].get("ingress", []):
        ports = rule.get("ports")
        if ports and not any(p.get("port") in (port, None) or isinstance(p["port"], str) for p in ports):
            continue
        if not rule.get("from") or any(_peer_matches(peer, labels, namespace) for peer in rule["from"]):
            return True
    return False


def _rayservice(overlay: str) -> dict:
    return of_kind(render(overlay), "RayService")[0]


def _policy(overlay: str) -> dict:
    (policy,) = of_kind(render(overlay), "NetworkPolicy")
    return policy


def _pins() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return dict(re.fullmatch(r"([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?==(\S+)", d).groups()
                for d in project["dependencies"] if "==" in d)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_policy_covers_every_ray_pod_kuberay_creates(overlay):
    policy = _policy(overlay)
    assert "Ingress" in policy["spec"]["policyTypes"]
    pods = kuberay_pod_labels(_rayservice(overlay))
    assert len(pods) == len(ray_pod_templates(_rayservice(overlay)))
    for labels in pods:
        assert _selects(policy["spec"]["podSelector"], labels), labels
        for port in RAY_INTERNAL + (METRICS, SERVE):  # Ray pods reach each other on every port
            assert admits(policy, (labels, NAMESPACE), port)
    assert not _selects(policy["spec"]["podSelector"], STRANGER_HERE[0])


# source, then the ports it must reach and the Ray-internal ports it must not
REACH = [
    (OPERATOR, {DASHBOARD, SERVE}, {GCS, CLIENT, DASHBOARD_AGENT, METRICS}),
    (PROMETHEUS, {METRICS, SERVE}, set(RAY_INTERNAL)),
    (STRANGER_HERE, {SERVE}, set(RAY_INTERNAL) | {METRICS}),
    (STRANGER_ELSEWHERE, {SERVE}, set(RAY_INTERNAL) | {METRICS}),
    (WEBHOOK_BESIDE_OPERATOR, {SERVE}, set(RAY_INTERNAL) | {METRICS}),
]


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize(("source", "reaches", "blocked"), REACH,
                         ids=["operator", "prometheus", "stranger-here", "stranger-elsewhere", "webhook"])
def test_ray_ports_are_reachable_only_from_the_operator_and_ray_pods(overlay, source, reaches, blocked):
    policy = _policy(overlay)
    assert {p for p in reaches if admits(policy, source, p)} == reaches
    assert {p for p in blocked if admits(policy, source, p)} == set()


def test_the_policy_evaluator_sees_an_open_dashboard():
    policy = _policy("cpu")
    opened = {**policy, "spec": {**policy["spec"], "ingress": policy["spec"]["ingress"] + [
        {"ports": [{"port": DASHBOARD, "protocol": "TCP"}]}]}}
    assert admits(opened, STRANGER_ELSEWHERE, DASHBOARD)
    loose = {**policy, "spec": {**policy["spec"], "podSelector": {"matchLabels": {"ray.io/cluster": "kdgate"}}}}
    assert not any(_selects(loose["spec"]["podSelector"], p) for p in kuberay_pod_labels(_rayservice("cpu")))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_service_exposes_ray_and_token_auth_is_on(overlay):
    objects = render(overlay)
    assert not of_kind(objects, "Ingress") and not of_kind(objects, "Route")
    assert all(s["spec"].get("type", "ClusterIP") == "ClusterIP" for s in of_kind(objects, "Service"))
    cluster = _rayservice(overlay)["spec"]["rayClusterConfig"]
    assert cluster["headGroupSpec"].get("serviceType", "ClusterIP") == "ClusterIP"
    # KubeRay creates the token Secret and sets RAY_AUTH_MODE/RAY_AUTH_TOKEN from it on every Ray container.
    assert cluster["authOptions"]["mode"] == "token"
    assert cluster["rayVersion"] == _pins()["ray"]
    assert tuple(int(n) for n in cluster["rayVersion"].split(".")[:2]) >= TOKEN_AUTH_SINCE
    for template in ray_pod_templates(_rayservice(overlay)):
        for container in template["spec"]["containers"]:
            names = {e["name"] for e in container.get("env", [])}
            assert not names & {"RAY_AUTH_MODE", "RAY_AUTH_TOKEN"}, "let KubeRay set them from its Secret"


def _quantity(value) -> float:
    """A Kubernetes quantity ("500m", "2", "4Gi") as a number."""
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9}
    number, unit = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(value)).groups()
    return float(number) * units.get(unit, 1)


def _dockerfile_uid() -> int:
    users = re.findall(r"^USER\s+(\d+)", (ROOT / "Dockerfile").read_text(), flags=re.M)
    return int(users[-1])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_ray_container_is_locked_down(overlay):
    for template in ray_pod_templates(_rayservice(overlay)):
        pod = template["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == _dockerfile_uid() != 0
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        tmp_volumes = {v["name"] for v in pod["volumes"] if "emptyDir" in v and v["emptyDir"].get("sizeLimit")}
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False and not context.get("privileged")
            assert context["capabilities"] == {"drop": ["ALL"]}
            # Ray writes its session dir, HAProxy config and spilled objects under /tmp only.
            assert context["readOnlyRootFilesystem"] is True
            assert any(m["mountPath"] == "/tmp" and m["name"] in tmp_volumes for m in container["volumeMounts"])
            requests, limits = container["resources"]["requests"], container["resources"]["limits"]
            for resource in ("cpu", "memory"):
                assert 0 < _quantity(requests[resource]) <= _quantity(limits[resource]), (container["name"], resource)


def _ray_cpus(cluster: dict) -> float:
    head = cluster["headGroupSpec"]
    cpus = _quantity(head["rayStartParams"].get("num-cpus", head["template"]["spec"]["containers"][0]
                                                ["resources"]["limits"]["cpu"]))
    for group in cluster["workerGroupSpecs"]:
        limit = group["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"]
        cpus += group["replicas"] * _quantity(group["rayStartParams"].get("num-cpus", limit))
    return cpus


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_at_least_two_gateway_replicas_and_room_for_every_autoscaling_maximum(overlay):
    rayservice = _rayservice(overlay)
    (app,) = yaml.safe_load(rayservice["spec"]["serveConfigV2"])["applications"]
    deployments = {d["name"]: d for d in app["deployments"]}
    gateway = deployments[GATEWAY_DEPLOYMENT]
    assert "num_replicas" not in gateway
    assert gateway["autoscaling_config"]["min_replicas"] >= GATEWAY_MIN_REPLICAS >= 2
    # The cluster must hold every deployment at its maximum, or autoscaling stalls.
    wanted = sum(d.get("autoscaling_config", {}).get("max_replicas", d.get("num_replicas", 1))
                 * d.get("ray_actor_options", {}).get("num_cpus", 1) for d in deployments.values())
    assert wanted <= _ray_cpus(rayservice["spec"]["rayClusterConfig"])
