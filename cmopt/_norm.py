"""Keeping normalisation statistics fixed across extra forward passes (SAM's second pass, Hessian measures)."""

from __future__ import annotations

import contextlib

import torch
from torch import nn


@contextlib.contextmanager
def frozen_norm_statistics(model: nn.Module):
    """Forward passes inside leave BatchNorm running statistics as they were."""
    saved = [
        (m, {k: b.clone() for k, b in m.named_buffers(recurse=False) if b is not None})
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._NormBase) and m.track_running_stats
    ]
    try:
        yield
    finally:
        with torch.no_grad():
            for module, buffers in saved:
                for name, value in buffers.items():
                    getattr(module, name).copy_(value)
