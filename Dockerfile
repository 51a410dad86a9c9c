# syntax=docker/dockerfile:1
# kdgate's serving image: the official Ray image (Ray and Python as pinned in pyproject.toml)
# plus kdgate installed from this repository with pyproject.toml's pins. Built by `make image`:
#   target cpu (the default) -> ghcr.io/kdgate/kdgate:<version>      k8s/overlays/cpu
#   target gpu               -> ghcr.io/kdgate/kdgate:<version>-gpu  k8s/overlays/gpu
# No models inside: they come from the kdgate-models volume. KubeRay supplies the command
# (`ray start ...`), so there is no CMD. tests/unit/ops/test_ops_image.py checks this file
# against pyproject.toml and lints it with hadolint.
#
# Pins. torch and onnxruntime must be the versions pyproject.toml pins (the test compares):
#  - cpu: torch from PyTorch's CPU wheel index (PyPI's Linux torch is a multi-GB CUDA build);
#    `2.13.0+cpu` satisfies the `torch==2.13.0` pin.
#  - gpu: torch from the CUDA wheel index of the base image's CUDA (CUDA_TAG names both, so
#    they cannot drift apart), and onnxruntime-gpu of the same version in place of
#    onnxruntime (both install the `onnxruntime` module: only one may be present). The
#    PyPI onnxruntime-gpu wheels are built for CUDA 12, which cu128 is.
ARG RAY_VERSION=2.60.0
ARG PYTHON_TAG=py311
ARG CUDA_TAG=cu128
ARG TORCH_VERSION=2.13.0
ARG ONNXRUNTIME_VERSION=1.31.1
ARG TORCH_INDEX=https://download.pytorch.org/whl

# ---- the kdgate wheel (pure Python, built once for both targets) -----------------------
FROM rayproject/ray:${RAY_VERSION}-${PYTHON_TAG}-cpu AS wheel
USER 1000:100
WORKDIR /home/ray/src
COPY --chown=1000:100 . .
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /home/ray/wheels .

# ---- gpu: the teacher on ONNX Runtime CUDA ----------------------------------------------
FROM rayproject/ray:${RAY_VERSION}-${PYTHON_TAG}-${CUDA_TAG} AS gpu
ARG CUDA_TAG
ARG TORCH_VERSION
ARG ONNXRUNTIME_VERSION
ARG TORCH_INDEX
USER 1000:100
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN --mount=type=bind,from=wheel,source=/home/ray/wheels,target=/tmp/wheels \
    pip install --no-cache-dir --index-url "${TORCH_INDEX}/${CUDA_TAG}" "torch==${TORCH_VERSION}" \
 && pip install --no-cache-dir /tmp/wheels/kdgate-*.whl \
 && pip uninstall --yes onnxruntime \
 && pip install --no-cache-dir "onnxruntime-gpu==${ONNXRUNTIME_VERSION}"
# Caches and config that libraries write go to /tmp: the pods' root filesystem is read-only.
ENV XDG_CACHE_HOME=/tmp/.cache MPLCONFIGDIR=/tmp/.matplotlib PYTHONDONTWRITEBYTECODE=1 \
    KDGATE_HOME=/var/lib/kdgate
WORKDIR /home/ray
USER 1000:100

# ---- cpu (last, so a plain `docker build .` builds it) ---------------------------------
FROM rayproject/ray:${RAY_VERSION}-${PYTHON_TAG}-cpu AS cpu
ARG TORCH_VERSION
ARG TORCH_INDEX
USER 1000:100
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN --mount=type=bind,from=wheel,source=/home/ray/wheels,target=/tmp/wheels \
    pip install --no-cache-dir --index-url "${TORCH_INDEX}/cpu" "torch==${TORCH_VERSION}" \
 && pip install --no-cache-dir /tmp/wheels/kdgate-*.whl
ENV XDG_CACHE_HOME=/tmp/.cache MPLCONFIGDIR=/tmp/.matplotlib PYTHONDONTWRITEBYTECODE=1 \
    KDGATE_HOME=/var/lib/kdgate
WORKDIR /home/ray
USER 1000:100
