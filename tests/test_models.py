"""The model registry: every architecture's shapes, its split into features and head, its size, the report's CNN."""

import re

import pytest
import torch
from torch import nn

import ferkit.models
from ferkit.models import count_params, create_model, list_models

ARCHS = list_models()
DOC_PARAMS = re.compile(r"~([\d.]+)M parameters")


@pytest.fixture(scope="module")
def faces() -> torch.Tensor:
    return torch.randn(3, 1, 48, 48, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("num_classes", [7, 8])
@pytest.mark.parametrize("arch", ARCHS)
def test_output_shape_and_finite(arch, num_classes, faces):
    torch.manual_seed(0)
    model = create_model(arch, num_classes=num_classes).eval()
    with torch.no_grad():
        logits = model(faces)
    assert logits.shape == (3, num_classes) and torch.isfinite(logits).all()


@pytest.mark.parametrize("arch", ARCHS)
def test_trains_with_finite_gradients(arch, faces):
    torch.manual_seed(0)
    model = create_model(arch).train()
    loss = nn.functional.cross_entropy(model(faces), torch.tensor([0, 3, 6]))
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert torch.isfinite(loss) and all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("arch", ARCHS)
def test_features_then_head_is_forward(arch, faces):
    torch.manual_seed(0)
    model = create_model(arch).eval()
    with torch.no_grad():
        features = model.forward_features(faces)
        assert features.ndim == 4 and features.shape[0] == 3  # (B, C, H, W) before pooling
        assert torch.allclose(model.forward_head(features), model(faces), atol=1e-6)


@pytest.mark.parametrize("arch", ARCHS)
def test_parameter_count_matches_docstring(arch):
    doc = getattr(ferkit.models, arch).__doc__
    claimed = DOC_PARAMS.search(doc)
    assert claimed, f"{arch}'s docstring does not state its size as '~N.NM parameters': {doc!r}"
    actual = count_params(create_model(arch))
    assert actual == pytest.approx(float(claimed[1]) * 1e6, rel=0.1), \
        f"{arch} has {actual / 1e6:.2f}M parameters, its docstring says ~{claimed[1]}M"


def test_unknown_name_lists_the_choices():
    with pytest.raises(ValueError, match="unknown model 'vgg99'") as error:
        create_model("vgg99")
    assert all(name in str(error.value) for name in ARCHS)


def test_seed_cnn_is_the_reports_keras_model(faces):
    """Conv2D(relu) + BatchNorm x 2, MaxPool, for 32/64/128 filters; Flatten, Dropout(0.3), Dense(128), Dense(7)."""
    model = create_model("seed_cnn")
    count = lambda kind: sum(isinstance(m, kind) for m in model.modules())  # noqa: E731
    assert (count(nn.Conv2d), count(nn.BatchNorm2d), count(nn.MaxPool2d)) == (6, 6, 3)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 32, 64, 64, 128, 128]
    assert all(c.kernel_size == (3, 3) and c.padding == (1, 1) for c in convs)  # Keras padding='same'
    block = [type(m) for m in model.features[:3]]
    assert block == [nn.Conv2d, nn.ReLU, nn.BatchNorm2d]  # Keras order: activation inside Conv2D, then BN
    [dropout] = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    assert dropout.p == 0.3
    linears = [(m.in_features, m.out_features) for m in model.modules() if isinstance(m, nn.Linear)]
    assert linears == [(128 * 6 * 6, 128), (128, 7)]
    with torch.no_grad():
        assert model.eval().forward_features(faces).shape == (3, 128, 6, 6)
