"""The deterministic random weights a spec names with ``random:SEED`` (``RANDOM_INIT`` in its
``extra``): defined here, below featurize and heads, so stage two rebuilds the very weights
stage one used (VideoDistill's trainable text tower) without importing featurize.
"""

from __future__ import annotations

import math

import torch
from torch import nn

RANDOM_INIT = "vqacache-normal-v1"
"""Identity of :func:`init_random_`; recorded in ``FeatureSpec.extra`` for random weights."""


@torch.no_grad()
def init_random_(model: nn.Module, seed: int) -> nn.Module:
    """Overwrite every parameter with seeded noise; the same numbers in any process.

    Independent of the library's own init (and of the global RNG): one CPU
    ``torch.Generator`` seeded with ``seed`` draws ``randn`` for each parameter in sorted
    name order. LayerNorm weights become ``1 + 0.02 * noise``, ``logit_scale`` becomes
    ``log(1 / 0.07)``, every other parameter (matrices, embeddings, biases) ``0.02 * noise``.
    Nothing is zero or one, so parity tests see every tensor. Named by :data:`RANDOM_INIT`.
    """
    generator = torch.Generator(device="cpu").manual_seed(seed)
    norm_weights = {f"{name}.weight" for name, m in model.named_modules() if isinstance(m, nn.LayerNorm)}
    for name, param in sorted(model.named_parameters()):
        noise = torch.randn(param.shape, generator=generator, dtype=torch.float32)
        if name == "logit_scale":
            value = torch.full(param.shape, math.log(1 / 0.07))
        elif name in norm_weights:
            value = 1.0 + 0.02 * noise
        else:
            value = 0.02 * noise
        param.copy_(value.to(param.dtype))
    return model
