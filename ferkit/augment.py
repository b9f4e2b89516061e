"""Training augmentation, run on whole batches on the GPU (or CPU) with torch.

The report's four augmentations (rotation, zoom, horizontal flip, brightness) plus shift,
contrast and random erasing, all in one affine warp + a few element-wise ops per batch, so data
never leaves the device and the loader is never the bottleneck. ``mix_batch`` adds mixup/cutmix.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentConfig:
    rotate: float = 15.0       # max degrees either way
    zoom: float = 0.15         # scale drawn from [1 - zoom, 1 + zoom]
    shift: float = 0.10        # max translation, as a fraction of the side
    flip: bool = True          # horizontal flip with probability 0.5
    brightness: float = 0.25   # additive, in [0, 1] intensity units
    contrast: float = 0.25     # multiplicative around the image mean
    erase: float = 0.25        # probability of erasing one random rectangle


NO_AUGMENT = AugmentConfig(0.0, 0.0, 0.0, False, 0.0, 0.0, 0.0)
# The presets ``ferkit train --aug`` offers: the report's four augmentations, and ours.
AUGMENTS = {
    "none": NO_AUGMENT,
    "report": AugmentConfig(rotate=15, zoom=0.15, shift=0.0, flip=True, brightness=0.2, contrast=0.0, erase=0.0),
    "default": AugmentConfig(),
}


def _uniform(n: int, low: float, high: float, device, generator) -> torch.Tensor:
    return torch.rand(n, device=device, generator=generator) * (high - low) + low


def augment_batch(x: torch.Tensor, cfg: AugmentConfig = AugmentConfig(),
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Augment (B, C, H, W) float images in [0, 1]; returns a new tensor of the same shape, in [0, 1]."""
    b, device = x.shape[0], x.device
    angle = _uniform(b, -cfg.rotate, cfg.rotate, device, generator) * (math.pi / 180)
    scale = _uniform(b, 1 - cfg.zoom, 1 + cfg.zoom, device, generator)
    tx = _uniform(b, -cfg.shift, cfg.shift, device, generator) * 2  # affine_grid spans [-1, 1]
    ty = _uniform(b, -cfg.shift, cfg.shift, device, generator) * 2
    flip = torch.where(torch.rand(b, device=device, generator=generator) < 0.5, -1.0, 1.0) if cfg.flip \
        else torch.ones(b, device=device)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale  # output->input map: zoom in = scale > 1
    theta = torch.stack([
        torch.stack([cos * flip, -sin, tx], dim=1),
        torch.stack([sin * flip, cos, ty], dim=1),
    ], dim=1)  # (B, 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)

    if cfg.contrast:
        mean = out.mean(dim=(1, 2, 3), keepdim=True)
        out = (out - mean) * _uniform(b, 1 - cfg.contrast, 1 + cfg.contrast, device, generator).view(b, 1, 1, 1) + mean
    if cfg.brightness:
        out = out + _uniform(b, -cfg.brightness, cfg.brightness, device, generator).view(b, 1, 1, 1)
    if cfg.erase:
        out = random_erase(out, cfg.erase, generator)
    return out.clamp_(0.0, 1.0)


def random_erase(x: torch.Tensor, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """With probability ``p`` per image, fill one rectangle (2-25 % of the area) with noise."""
    b, _, h, w = x.shape
    device = x.device
    area = _uniform(b, 0.02, 0.25, device, generator) * h * w
    aspect = torch.exp(_uniform(b, math.log(0.3), math.log(3.3), device, generator))
    eh = (area * aspect).sqrt().clamp(1, h)
    ew = (area / aspect).sqrt().clamp(1, w)
    y0 = torch.rand(b, device=device, generator=generator) * (h - eh)
    x0 = torch.rand(b, device=device, generator=generator) * (w - ew)
    ys = torch.arange(h, device=device).view(1, h, 1)
    xs = torch.arange(w, device=device).view(1, 1, w)
    inside = (ys >= y0.view(b, 1, 1)) & (ys < (y0 + eh).view(b, 1, 1)) & (xs >= x0.view(b, 1, 1)) & (xs < (x0 + ew).view(b, 1, 1))
    chosen = (torch.rand(b, device=device, generator=generator) < p).view(b, 1, 1)
    mask = (inside & chosen).unsqueeze(1)  # (B, 1, H, W)
    noise = torch.rand(x.shape, device=device, generator=generator)
    return torch.where(mask, noise, x)


def mix_batch(x: torch.Tensor, y: torch.Tensor, alpha: float, cutmix_prob: float = 0.5,
              generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixup or CutMix (chosen per batch) on images ``x`` and soft targets ``y`` (B, C).

    Returns mixed images and mixed targets; ``alpha`` <= 0 returns the inputs unchanged.
    """
    if alpha <= 0:
        return x, y
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    perm = torch.randperm(x.shape[0], device=x.device, generator=generator)
    if torch.rand(1, device=x.device, generator=generator).item() < cutmix_prob:
        h, w = x.shape[-2:]
        ch, cw = int(h * math.sqrt(1 - lam)), int(w * math.sqrt(1 - lam))
        cy = int(torch.randint(h, (1,), device=x.device, generator=generator))
        cx = int(torch.randint(w, (1,), device=x.device, generator=generator))
        y0, y1, x0, x1 = max(cy - ch // 2, 0), min(cy + ch // 2, h), max(cx - cw // 2, 0), min(cx + cw // 2, w)
        x = x.clone()
        x[..., y0:y1, x0:x1] = x[perm][..., y0:y1, x0:x1]
        lam = 1 - (y1 - y0) * (x1 - x0) / (h * w)
    else:
        x = lam * x + (1 - lam) * x[perm]
    return x, lam * y + (1 - lam) * y[perm]
