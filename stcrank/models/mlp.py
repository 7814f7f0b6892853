"""Multi-layer perceptrons."""

from __future__ import annotations

from torch import nn


def mlp(in_features: int, hidden: list[int] | tuple[int, ...], out_features: int | None = None) -> nn.Sequential:
    """Build ``Linear -> ReLU`` blocks, optionally followed by a final ``Linear`` without activation.

    The ReLUs work in place on their linear layer's fresh output (one memory pass less per layer).

    Args:
        in_features: Input width.
        hidden: Widths of the ReLU-activated layers.
        out_features: Width of a last linear layer with no activation; none when None.

    Returns:
        The stacked layers.
    """
    layers: list[nn.Module] = []
    width = in_features
    for size in hidden:
        layers += [nn.Linear(width, size), nn.ReLU(inplace=True)]
        width = size
    if out_features is not None:
        layers.append(nn.Linear(width, out_features))
    return nn.Sequential(*layers)
