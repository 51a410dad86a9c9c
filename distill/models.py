"""Built-in architectures for teachers and students: 1-D CNN, 2-D CNN and MLP.

All take float inputs [batch, *feature_shape] and return raw logits [batch, n_outputs]
(no softmax inside: the ONNX contract in docs/artifacts.md leaves it to the caller).

Example:
    >>> net = build_model(ArchitectureConfig(kind="cnn1d", width=32, depth=3), (40,), 10)
    >>> net(torch.zeros(2, 40)).shape
    torch.Size([2, 10])
"""
from __future__ import annotations

import math

import torch
from torch import nn

from distill.config import ArchitectureConfig
from distill.errors import ConfigError


def _conv_stack(arch: ArchitectureConfig, in_channels: int, spatial: tuple[int, ...], conv, pool, norm):
    """Conv (+ BatchNorm) + ReLU layers; returns (layers, out_channels, out_spatial).

    'stride' halves the length in every conv (cheap: what a lean student wants);
    'pool' keeps stride 1 and max-pools after every second conv (more compute per input,
    which is what makes a teacher accurate).
    """
    layers: list[nn.Module] = []
    channels = in_channels
    for index in range(arch.depth):
        kernel = arch.kernel_size if index == 0 else 3
        stride = 2 if arch.downsample == "stride" else 1
        layers.append(conv(channels, arch.width, kernel, stride=stride, padding=kernel // 2))
        layers += [norm(arch.width), nn.ReLU()] if arch.batchnorm else [nn.ReLU()]
        channels = arch.width
        spatial = tuple((s + 2 * (kernel // 2) - kernel) // stride + 1 for s in spatial)
        if arch.downsample == "pool" and index % 2 == 1 and min(spatial) >= 2:
            layers.append(pool(2))
            spatial = tuple(s // 2 for s in spatial)
        if min(spatial) < 1:
            raise ConfigError(f"architecture.depth {arch.depth} is too deep for inputs of shape {spatial}")
    return layers, channels, spatial


def _head(arch: ArchitectureConfig, n_features: int, n_outputs: int) -> nn.Module:
    if arch.hidden:
        return nn.Sequential(nn.Linear(n_features, arch.hidden), nn.ReLU(), nn.Linear(arch.hidden, n_outputs))
    return nn.Linear(n_features, n_outputs)


class ConvNet(nn.Module):
    """A 1-D or 2-D CNN; inputs without a channel axis get one."""

    def __init__(self, arch: ArchitectureConfig, feature_shape: tuple[int, ...], n_outputs: int):
        super().__init__()
        spatial_dims = 1 if arch.kind == "cnn1d" else 2
        if len(feature_shape) == spatial_dims:
            in_channels, spatial, self.add_channel = 1, tuple(feature_shape), True
        elif len(feature_shape) == spatial_dims + 1:
            in_channels, spatial, self.add_channel = feature_shape[0], tuple(feature_shape[1:]), False
        else:
            raise ConfigError(f"architecture.kind {arch.kind} needs inputs of {spatial_dims} or "
                              f"{spatial_dims + 1} dims per row, the data has shape {tuple(feature_shape)}")
        conv, pool, norm = ((nn.Conv1d, nn.MaxPool1d, nn.BatchNorm1d) if spatial_dims == 1
                            else (nn.Conv2d, nn.MaxPool2d, nn.BatchNorm2d))
        layers, channels, spatial = _conv_stack(arch, in_channels, spatial, conv, pool, norm)
        self.features = nn.Sequential(*layers)
        self.head = _head(arch, channels * math.prod(spatial), n_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.add_channel:
            x = x.unsqueeze(1)
        return self.head(self.features(x).flatten(1))


class MLP(nn.Module):
    """``depth`` hidden layers of ``width`` units with ReLU; inputs are flattened."""

    def __init__(self, arch: ArchitectureConfig, feature_shape: tuple[int, ...], n_outputs: int):
        super().__init__()
        layers: list[nn.Module] = []
        width_in = math.prod(feature_shape)
        for _ in range(arch.depth):
            layers.append(nn.Linear(width_in, arch.width))
            layers += [nn.BatchNorm1d(arch.width), nn.ReLU()] if arch.batchnorm else [nn.ReLU()]
            width_in = arch.width
        layers.append(nn.Linear(width_in, n_outputs))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1))


def build_model(arch: ArchitectureConfig, feature_shape: tuple[int, ...], n_outputs: int) -> nn.Module:
    """A freshly initialised network of the given architecture."""
    if arch.kind == "mlp":
        return MLP(arch, feature_shape, n_outputs)
    return ConvNet(arch, feature_shape, n_outputs)


def describe(arch: ArchitectureConfig, model: nn.Module) -> dict:
    """The architecture as a plain dict for the manifest, with its parameter count."""
    return {**arch.model_dump(), "params": sum(p.numel() for p in model.parameters())}
