"""Model backends behind one small protocol: ``infer(x) -> y`` and ``ready()``.

Three implementations: ONNX Runtime in-process (:class:`OnnxBackend`), a remote Triton
Inference Server through tritonclient (:class:`TritonBackend`) and TorchScript
(:class:`TorchScriptBackend`). Heavy libraries are imported inside the constructors so
importing this module stays cheap. Every library error is translated to
:class:`BackendError` so the gateway handles one exception type (fallback, 5xx/503).

Example::

    backend = OnnxBackend("runs/demo/student.onnx", device="cpu")
    logits = backend.infer(np.zeros((2, 40), dtype=np.float32))
"""
from __future__ import annotations

import logging
import time
from typing import Protocol, runtime_checkable

import numpy as np

from gateway.core.errors import BackendError

log = logging.getLogger(__name__)

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
# ONNX input types a warm-up row can be made for (the gateway's models: float features, token ids).
_ONNX_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
                "tensor(int64)": np.int64, "tensor(int32)": np.int32}


@runtime_checkable
class Backend(Protocol):
    """What the gateway needs from a model: a batch in, a batch out."""

    def infer(self, x: np.ndarray) -> np.ndarray:
        """Run the model on a float32 batch ``[rows, *features]``; return ``[rows, n_out]``."""

    def ready(self) -> bool:
        """True when the backend can answer now."""


def onnx_providers(device: str) -> list[str]:
    """ONNX Runtime execution providers for ``device`` (auto|cpu|cuda).

    ``auto`` takes CUDA when ONNX Runtime offers it, else CPU; ``cuda`` without the CUDA
    provider is a configuration error, not a silent CPU fallback.

    >>> onnx_providers("cpu")
    ['CPUExecutionProvider']
    """
    import onnxruntime as ort

    available = ort.get_available_providers()
    cuda = "CUDAExecutionProvider"
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device == "cuda":
        if cuda not in available:
            raise BackendError(f"device: cuda requested but ONNX Runtime offers only {available}")
        return [cuda, "CPUExecutionProvider"]
    if device == "auto":
        return [cuda, "CPUExecutionProvider"] if cuda in available else ["CPUExecutionProvider"]
    raise BackendError(f"unknown device {device!r}; expected auto, cpu or cuda")


class OnnxBackend:
    """ONNX Runtime session inside this process (the colocated, no-hop path).

    ``intra_op_threads`` defaults to 1: replicas share few cores and a tiny student gains
    nothing from a thread pool, while the pool's spin-waits steal CPU from the proxy.
    """

    def __init__(self, model_path: str, *, device: str = "auto", intra_op_threads: int = 1):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        try:
            self._session = ort.InferenceSession(
                str(model_path), sess_options=options, providers=onnx_providers(device)
            )
        except BackendError:
            raise
        except Exception as err:  # onnxruntime raises several unrelated types
            raise BackendError(f"cannot load ONNX model {model_path}: {err}") from err
        self.model_path = str(model_path)
        self.input_name = self._session.get_inputs()[0].name
        self.output_name = self._session.get_outputs()[0].name

    def io_shapes(self) -> tuple[list[int], list[int]] | None:
        """``([-1, *features], [-1, n_out])`` when the graph declares fixed non-batch dims."""
        dims_in = self._session.get_inputs()[0].shape[1:]
        dims_out = self._session.get_outputs()[0].shape[1:]
        if not all(isinstance(d, int) for d in [*dims_in, *dims_out]):
            return None
        return [-1, *dims_in], [-1, *dims_out]

    def warm_up(self) -> float | None:
        """Run one row of zeros (each unnamed dim 1) through the session and return its seconds;
        None when the input's type has no numpy dtype here or the run fails (logged: a real
        request then reports the error). A session's first run sets up its buffers and kernels:
        measured here, 0.38 ms on the first call vs 0.06 ms after on the MNIST-1D teacher, 73 vs
        15 us on the student. :func:`build_backend` warms each session serving loads, so the first
        request after a deploy or restart does not pay that (nor feed it into the colocated
        teacher's inline-or-thread estimate)."""
        spec = self._session.get_inputs()[0]
        dtype = _ONNX_DTYPES.get(spec.type)
        if dtype is None:
            log.info("%s: no warm-up for input type %s", self.model_path, spec.type)
            return None
        x = np.zeros([d if isinstance(d, int) and d > 0 else 1 for d in spec.shape], dtype=dtype)
        start = time.perf_counter()
        try:
            self.infer(x)
        except BackendError as err:
            log.warning("warm-up run failed (the model stays loaded): %s", err)
            return None
        return time.perf_counter() - start

    def infer(self, x: np.ndarray) -> np.ndarray:
        """Run the session; errors become :class:`BackendError`."""
        try:
            return self._session.run([self.output_name], {self.input_name: x})[0]
        except Exception as err:
            raise BackendError(f"ONNX Runtime failed on {self.model_path}: {err}") from err

    def ready(self) -> bool:
        """An ONNX session that loaded is ready."""
        return True


class TorchScriptBackend:
    """A TorchScript module (``torch.jit.load``) for teachers that do not export to ONNX."""

    def __init__(self, model_path: str, *, device: str = "auto"):
        import torch

        want_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
        if device == "cuda" and not torch.cuda.is_available():
            raise BackendError("device: cuda requested but torch sees no GPU")
        self._device = torch.device("cuda" if want_cuda else "cpu")
        try:
            self._module = torch.jit.load(str(model_path), map_location=self._device).eval()
        except Exception as err:
            raise BackendError(f"cannot load TorchScript model {model_path}: {err}") from err
        self._torch = torch
        self.model_path = str(model_path)

    def infer(self, x: np.ndarray) -> np.ndarray:
        """Run the module without autograd; errors become :class:`BackendError`."""
        torch = self._torch
        try:
            with torch.inference_mode():
                out = self._module(torch.from_numpy(np.ascontiguousarray(x)).to(self._device))
            return out.detach().cpu().numpy().astype(np.float32, copy=False)
        except Exception as err:
            raise BackendError(f"TorchScript model {self.model_path} failed: {err}") from err

    def ready(self) -> bool:
        """A module that loaded is ready."""
        return True


class TritonBackend:
    """A model on a remote Triton Inference Server (HTTP or gRPC through tritonclient).

    Calls fail fast: ``timeout_s`` bounds connect and network time so a dead server turns
    into a :class:`BackendError` (and a fallback) quickly instead of a hung request.
    """

    def __init__(
        self,
        url: str,
        model_name: str,
        *,
        model_version: str = "",
        protocol: str = "http",
        timeout_s: float = 1.0,
        input_name: str = INPUT_NAME,
        output_name: str = OUTPUT_NAME,
    ):
        self.url, self.model_name, self.model_version = url, model_name, model_version or ""
        self.protocol, self.timeout_s = protocol, timeout_s
        self.input_name, self.output_name = input_name, output_name
        try:
            if protocol == "http":
                import tritonclient.http as client_module

                self._client = client_module.InferenceServerClient(
                    url, connection_timeout=timeout_s, network_timeout=timeout_s
                )
            elif protocol == "grpc":
                import tritonclient.grpc as client_module

                self._client = client_module.InferenceServerClient(url)
            else:
                raise BackendError(f"unknown Triton protocol {protocol!r}; expected http or grpc")
        except BackendError:
            raise
        except Exception as err:
            raise BackendError(f"cannot create Triton client for {url}: {err}") from err
        self._module = client_module

    def infer(self, x: np.ndarray) -> np.ndarray:
        """Send one request (token ids as INT64, anything else as FP32); server errors and timeouts
        become :class:`BackendError`."""
        ids = np.issubdtype(np.asarray(x).dtype, np.integer)
        x = np.ascontiguousarray(x, dtype=np.int64 if ids else np.float32)
        module = self._module
        try:
            request_input = module.InferInput(self.input_name, list(x.shape), "INT64" if ids else "FP32")
            request_input.set_data_from_numpy(x)
            output = module.InferRequestedOutput(self.output_name)
            kwargs = {"client_timeout": self.timeout_s} if self.protocol == "grpc" else {}
            result = self._client.infer(
                self.model_name, [request_input], model_version=self.model_version,
                outputs=[output], **kwargs,
            )
            y = result.as_numpy(self.output_name)
        except Exception as err:  # tritonclient raises its own and socket/gevent errors
            raise BackendError(
                f"Triton {self.url} model {self.model_name!r} failed: {err}"
            ) from err
        if y is None:
            raise BackendError(f"Triton model {self.model_name!r} returned no {self.output_name!r}")
        return y

    def ready(self) -> bool:
        """Ask the server whether the model is ready; any error means not ready."""
        try:
            return bool(self._client.is_model_ready(self.model_name, self.model_version))
        except Exception:  # a health probe must never raise
            log.debug("Triton readiness probe failed", exc_info=True)
            return False


def build_backend(variant) -> Backend:
    """Build the backend a :class:`~gateway.core.config.VariantConfig` describes; an ONNX session is
    warmed (:meth:`OnnxBackend.warm_up`) before it is returned, so no request pays its first run.

    Example::

        backend = build_backend(config.variants[0])
    """
    if variant.backend == "onnx":
        backend = OnnxBackend(_required_path(variant), device=variant.device, intra_op_threads=variant.threads)
        backend.warm_up()
        return backend
    if variant.backend == "torch":
        return TorchScriptBackend(_required_path(variant), device=variant.device)
    if variant.backend == "triton":
        target = variant.triton
        if target is None:
            raise BackendError(f"variant {variant.name!r}: backend triton needs a triton: section")
        return TritonBackend(
            target.url, target.model_name, model_version=target.model_version or "",
            protocol=target.protocol, timeout_s=variant.timeout_s,
        )
    raise BackendError(f"variant {variant.name!r}: unknown backend {variant.backend!r}")


def _required_path(variant) -> str:
    from gateway.model_store import model_file  # noqa: PLC0415

    if not variant.model_path:
        raise BackendError(f"variant {variant.name!r}: backend {variant.backend} needs model_path")
    return model_file(variant)  # a URI: fetched once per replica, verified against the manifest
