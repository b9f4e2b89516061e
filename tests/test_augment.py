"""Batch augmentation on tensors: shapes, ranges, determinism, identity, flips, and mixup/cutmix targets."""

import pytest
import torch

from ferkit.augment import NO_AUGMENT, AugmentConfig, augment_batch, mix_batch

FLIP_ONLY = AugmentConfig(rotate=0.0, zoom=0.0, shift=0.0, flip=True, brightness=0.0, contrast=0.0, erase=0.0)


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture
def batch() -> torch.Tensor:
    return torch.rand(16, 1, 48, 48, generator=seeded(123))


def test_keeps_shape_and_range(batch):
    strong = AugmentConfig(rotate=30, zoom=0.3, shift=0.2, brightness=0.5, contrast=0.5, erase=1.0)
    out = augment_batch(batch, strong, seeded())
    assert out.shape == batch.shape and out.dtype == batch.dtype
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert not torch.allclose(out, batch, atol=1e-3)  # it did change the faces


def test_deterministic_for_a_seeded_generator(batch):
    first, again, other = (augment_batch(batch, AugmentConfig(), seeded(seed)) for seed in (7, 7, 8))
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_no_augment_is_the_identity(batch):
    assert torch.allclose(augment_batch(batch, NO_AUGMENT, seeded()), batch, atol=1e-5)


def test_flip_mirrors():
    face = torch.rand(1, 1, 48, 48, generator=seeded(1))
    out = augment_batch(face.repeat(64, 1, 1, 1), FLIP_ONLY, seeded(2))
    same = (out - face).abs().amax(dim=(1, 2, 3)) < 1e-5
    mirrored = (out - face.flip(-1)).abs().amax(dim=(1, 2, 3)) < 1e-5
    assert (same | mirrored).all()  # every output is the face or its exact mirror image
    assert 10 < int(mirrored.sum()) < 54  # and each comes out about half the time


@pytest.mark.parametrize("cutmix_prob", [0.0, 1.0], ids=["mixup", "cutmix"])
def test_mix_batch_targets_match_the_mixed_pixels(cutmix_prob):
    """Image i is filled with the value i and labelled i: a mixed image's mean must be its targets' mean label."""
    b = 12
    torch.manual_seed(0)  # the Beta draw uses the global generator
    x = torch.arange(b, dtype=torch.float32).view(b, 1, 1, 1).expand(b, 1, 48, 48).contiguous()
    y = torch.eye(b)
    mixed_x, mixed_y = mix_batch(x, y, alpha=1.0, cutmix_prob=cutmix_prob, generator=seeded(3))
    assert mixed_x.shape == x.shape and mixed_y.shape == y.shape
    assert torch.allclose(mixed_y.sum(1), torch.ones(b)) and (mixed_y >= 0).all()
    assert torch.allclose(mixed_x.mean(dim=(1, 2, 3)), mixed_y @ torch.arange(b, dtype=torch.float32), atol=1e-4)
    assert not torch.equal(mixed_y, y)


def test_mix_batch_off_returns_the_inputs(batch):
    y = torch.eye(16)
    out_x, out_y = mix_batch(batch, y, alpha=0.0)
    assert out_x is batch and out_y is y
