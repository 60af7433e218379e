"""Batched, gradient-free logits for a whole array of windows."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


@torch.no_grad()
def predict_logits(
    model: nn.Module, x: np.ndarray, batch_size: int = 512, device: torch.device | None = None
) -> np.ndarray:
    """x[N, W, F] -> float32 logits[N, C]; puts the model in eval mode."""
    model.eval()
    device = device or next(model.parameters()).device
    out = [
        model(torch.as_tensor(x[i : i + batch_size], device=device)).float().cpu()
        for i in range(0, len(x), batch_size)
    ]
    if not out:
        n_classes = getattr(model, "n_classes", 0)
        return np.zeros((0, n_classes), dtype=np.float32)
    return torch.cat(out).numpy()


def predict_proba(
    model: nn.Module, x: np.ndarray, batch_size: int = 512, device: torch.device | None = None
) -> np.ndarray:
    """x[N, W, F] -> float32 class probabilities[N, C] (softmax of `predict_logits`)."""
    logits = torch.as_tensor(predict_logits(model, x, batch_size, device))
    return torch.softmax(logits, dim=1).numpy()
