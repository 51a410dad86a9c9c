"""Errors of the distill package: one root, a small hierarchy.

Foreign errors (numpy, torch, onnx, onnxruntime) are translated at the boundary with
``raise ... from err`` so a user sees what to fix, not a stack trace from a library.
"""
from __future__ import annotations


class DistillError(Exception):
    """Root of every error distill raises on purpose."""


class ConfigError(DistillError):
    """The distill config is invalid (the message names the field)."""


class DataError(DistillError):
    """Input data has the wrong shape, dtype, NaN/Inf, or labels out of range."""


class TeacherError(DistillError):
    """The teacher (ONNX file or precomputed logits) cannot be used."""


class ExportError(DistillError):
    """Export failed: ONNX checker, parity check, quantization or Triton config."""


class ParityError(ExportError):
    """ONNX Runtime output differs from PyTorch by more than the declared tolerance."""
