"""Training-time augmentation for few runs of many devices: what differs between two plants.

Every device has its own transmitter offsets and gains, so a model trained on a few devices
learns their calibration instead of the fault. Each training window gets, per channel, a random
gain (1 + gain·N(0, 1)) and offset (offset·N(0, 1)), constant over the window like a device's
calibration, plus reading noise (noise·N(0, 1)); all in normalized units (one unit = the
channel's training std). Draws come from torch's global RNG, which the training state saves,
so a resumed run continues the same draws.
"""

from __future__ import annotations

import torch
from torch import Tensor

from edge_lstm.config import AugmentConfig


def augment(x: Tensor, cfg: AugmentConfig) -> Tensor:
    """x[B, W, F] -> a perturbed copy (x itself when every strength is 0)."""
    if not cfg.active:
        return x
    batch, _, channels = x.shape
    out = x
    if cfg.gain:
        out = out * (1.0 + cfg.gain * torch.randn(batch, 1, channels, device=x.device))
    if cfg.offset:
        out = out + cfg.offset * torch.randn(batch, 1, channels, device=x.device)
    if cfg.noise:
        out = out + cfg.noise * torch.randn_like(x)
    return out
