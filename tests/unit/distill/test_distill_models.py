"""Built-in architectures: shapes, sizes, and the sweep's choice rule."""
from __future__ import annotations

import pytest
import torch

from distill.config import ArchitectureConfig
from distill.errors import ConfigError
from distill.models import build_model
from distill.sweep import SweepRun, choose_best


@pytest.mark.parametrize("arch, shape", [
    (ArchitectureConfig(kind="cnn1d", width=8, depth=3), (40,)),
    (ArchitectureConfig(kind="cnn1d", width=8, depth=4, downsample="pool", hidden=16), (40,)),
    (ArchitectureConfig(kind="cnn1d", width=8, depth=2), (3, 20)),
    (ArchitectureConfig(kind="cnn2d", width=8, depth=2, kernel_size=3), (8, 8)),
    (ArchitectureConfig(kind="mlp", width=16, depth=2), (8, 8)),
])
def test_models_map_rows_to_logits(arch, shape):
    model = build_model(arch, shape, 7)
    assert model(torch.zeros(5, *shape)).shape == (5, 7)


def test_width_sets_size():
    small = build_model(ArchitectureConfig(width=8), (40,), 10)
    large = build_model(ArchitectureConfig(width=64), (40,), 10)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(large) > 10 * count(small)


def test_wrong_input_rank_is_a_config_error():
    with pytest.raises(ConfigError, match="cnn2d needs inputs of 2 or 3 dims"):
        build_model(ArchitectureConfig(kind="cnn2d"), (40,), 10)


def _run(kind, t, score, agreement=0.9):
    return SweepRun(kind, t, 0.5, score, agreement, 10, torch.nn.Identity())


def test_choose_best_picks_highest_validation_never_the_baseline():
    runs = [_run("kd", 1.0, 0.80), _run("kd", 4.0, 0.90, 0.8), _run("kd", 8.0, 0.90, 0.95),
            _run("baseline", None, 0.99)]
    best = choose_best(runs)
    assert best.temperature == 8.0 and best.chosen
    assert [r.chosen for r in runs] == [False, False, True, False]
