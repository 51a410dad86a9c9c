"""The ``manifest.json`` contract between distill (writer) and the gateway (reader).

One typed model for both sides (docs/artifacts.md): distill validates what it writes with
:class:`Manifest`; the gateway, the window stats and the rollout read it through
:func:`read_manifest`. Unknown keys are kept (a newer writer may add sections); a missing
or mistyped required key fails with a message naming it.

Example::

    manifest = read_manifest("runs/demo/manifest.json")
    manifest.input_edges        # per-feature reference bin edges (input drift), or None
    manifest.n_classes          # 10 for MNIST-1D
"""
from __future__ import annotations

import json
import pathlib
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from gateway.core.errors import ManifestError

FORMAT_VERSION = 1
INPUT_NAME = "input"
OUTPUT_NAME = "logits"


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class TensorInfo(_Open):
    """One model input or output: ONNX name, dtype and shape (``-1`` for the batch axis)."""

    name: str = Field(description="ONNX tensor name: 'input' for inputs, 'logits' for outputs.")
    dtype: str = Field("float32", description="Element type.")
    shape: list[int] = Field(description="Shape with -1 for the dynamic batch axis, e.g. [-1, 40].")


class ModelEntry(_Open):
    """A model file of the artifact folder and its lineage."""

    file: str | None = Field(None, description="File name inside the artifact folder.")
    sha256: str | None = Field(None, description="sha256 of the file (a model fetched from a URI must match it).")
    int8_file: str | None = Field(None, description="INT8 quantization of the model, inside the artifact folder.")
    int8_sha256: str | None = Field(None, description="sha256 of int8_file.")
    params: int | None = Field(None, description="Parameter count.")


class TokenizerInfo(_Open):
    """The tokenizer of a text model: texts -> int64 token ids, the models' input tensor."""

    file: str = Field(description="tokenizer.json inside the artifact folder (HuggingFace tokenizers format).")
    sha256: str = Field(description="sha256 of the file (verified like the model files).")
    max_length: int = Field(gt=0, description="Tokens per text; longer texts are truncated.")
    pad_id: int = Field(0, ge=0, description="Padding id; the models derive their attention mask from it.")


class InputReference(_Open):
    """Training-set input distribution per flattened feature (input drift baseline)."""

    edges: list[list[float]] = Field(description="F lists of interior quantile edges.")
    fractions: list[list[float]] = Field(description="F lists: share of training rows per bin.")
    rows: int | None = Field(None, ge=1, description="Training rows behind the fractions (the drift test's "
                             "reference sample size; None in manifests written before it was recorded).")


class Reference(_Open):
    """Reference statistics the rollout's drift gates compare live traffic with."""

    inputs: InputReference | None = Field(None, description="Input bins of the training set.")
    outputs: dict[str, Any] = Field(default_factory=dict, description="e.g. class_fractions of the teacher on test.")


class Manifest(_Open):
    """``manifest.json`` (docs/artifacts.md)."""

    format_version: int = Field(FORMAT_VERSION, description="Manifest format version.")
    kdgate_version: str = Field(description="kdgate version that wrote it.")
    created_at: str = Field(description="UTC time it was written, ISO 8601.")
    task: Literal["classification", "regression", "embedding"] = Field(description="What the models predict.")
    input: TensorInfo = Field(description="The models' single input.")
    output: TensorInfo = Field(description="The models' single output.")
    class_labels: list[str] | None = Field(None, description="Class names (classification).")
    models: dict[str, ModelEntry] = Field(description="'student' (required) and 'teacher' entries.")
    dataset: dict[str, Any] = Field(description="Dataset name, sha256 and split sizes.")
    hyperparameters: dict[str, Any] = Field(description="Distillation hyperparameters.")
    metrics: dict[str, Any] = Field(description="Offline evaluation figures.")
    reference: Reference = Field(description="Reference statistics for the drift gates.")
    tokenizer: TokenizerInfo | None = Field(None, description="Text models only: the tokenizer that turns "
                                            "request texts into the int64 'input' ids.")

    @model_validator(mode="after")
    def _contract(self) -> "Manifest":
        problems = []
        if self.task == "classification" and not self.class_labels:
            problems.append("classification needs 'class_labels'")
        if self.input.dtype == "int64" and self.tokenizer is None:
            problems.append("an int64 (token id) input needs 'tokenizer'")
        if "student" not in self.models:
            problems.append("'models' needs a 'student' entry")
        for side, name in (("input", INPUT_NAME), ("output", OUTPUT_NAME)):
            if getattr(self, side).name != name:
                problems.append(f"'{side}.name' must be '{name}'")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def input_edges(self) -> list[list[float]] | None:
        """Per-feature reference bin edges (None without an input reference)."""
        inputs = self.reference.inputs
        return [list(map(float, e)) for e in inputs.edges] if inputs and inputs.edges else None

    @property
    def n_classes(self) -> int | None:
        """Number of classes of a classification manifest (None otherwise)."""
        if self.task != "classification":
            return None
        if self.class_labels:
            return len(self.class_labels)
        last = self.output.shape[-1] if self.output.shape else -1
        return last if last > 0 else None


def validate_manifest(data: Any, *, where: str = "manifest") -> Manifest:
    """``data`` as a :class:`Manifest`; :class:`ManifestError` naming each bad key otherwise."""
    try:
        return Manifest.model_validate(data)
    except ValidationError as err:
        problems = []
        for e in err.errors():
            loc = ".".join(str(p) for p in e["loc"])
            problems.append(f"missing key '{loc}'" if e["type"] == "missing" else f"{loc}: {e['msg']}".lstrip(": "))
        raise ManifestError(f"{where} is invalid: " + "; ".join(problems)) from err


def read_manifest(path: str | pathlib.Path) -> Manifest:
    """Read and validate ``manifest.json`` at ``path`` (:class:`ManifestError` when it cannot)."""
    try:
        data = json.loads(pathlib.Path(path).read_text())
    except (OSError, ValueError) as err:
        raise ManifestError(f"manifest {path} unreadable: {err}") from err
    return validate_manifest(data, where=f"manifest {path}")
