"""Rendering the k8s overlays for the ops tests, and the Ray pods as KubeRay will label them.

Example::

    objects = render("cpu")
    (rayservice,) = of_kind(objects, "RayService")
    for template in ray_pod_templates(rayservice): ...
"""
from __future__ import annotations

import functools
import pathlib
import shutil
import subprocess

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[3]
OVERLAYS = ("cpu", "gpu")
# KubeRay names a RayService's cluster "<rayservice>-<5 random characters>" and renames it on
# every NewCluster upgrade: a selector on ray.io/cluster's value would break on the first one.
RAYCLUSTER_NAME = "kdgate-x7k2p"


@functools.lru_cache(maxsize=None)
def render(overlay: str) -> tuple[dict, ...]:
    """The objects ``kubectl kustomize k8s/overlays/<overlay>`` renders (skip without kubectl)."""
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed (kubectl kustomize renders the overlays)")
    out = subprocess.run(["kubectl", "kustomize", str(ROOT / "k8s" / "overlays" / overlay)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return tuple(d for d in yaml.safe_load_all(out.stdout) if d)


def of_kind(objects, kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]


def ray_pod_templates(rayservice: dict) -> list[dict]:
    """The head's pod template, then each worker group's."""
    cluster = rayservice["spec"]["rayClusterConfig"]
    return [cluster["headGroupSpec"]["template"]] + [g["template"] for g in cluster["workerGroupSpecs"]]


def kuberay_pod_labels(rayservice: dict) -> list[dict[str, str]]:
    """The labels KubeRay gives each Ray pod: its own ray.io/* labels plus the template's.

    As KubeRay's ``labelPod`` does: a template label wins, except ray.io/node-type and
    ray.io/group, which KubeRay always sets itself.
    """
    cluster = rayservice["spec"]["rayClusterConfig"]
    groups = [("head", "headgroup", cluster["headGroupSpec"]["template"])]
    groups += [("worker", g["groupName"], g["template"]) for g in cluster["workerGroupSpecs"]]
    labelled = []
    for node_type, group, template in groups:
        kuberay = {"ray.io/is-ray-node": "yes", "ray.io/cluster": RAYCLUSTER_NAME,
                   "ray.io/identifier": f"{RAYCLUSTER_NAME}-{node_type}",
                   "app.kubernetes.io/name": "kuberay", "app.kubernetes.io/created-by": "kuberay-operator"}
        forced = {"ray.io/node-type": node_type, "ray.io/group": group}
        labelled.append({**kuberay, **template["metadata"].get("labels", {}), **forced})
    return labelled
