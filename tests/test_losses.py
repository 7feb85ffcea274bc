"""Losses: each term is zero at its target, grows away from it, and is scale-free across backbones."""

import pytest
import torch

from rotoscope.backbones import load_backbone
from rotoscope.losses import (LossWeights, color_stats, gram, perceptual_loss, relative_mse, style_target,
                              total_variation)


@pytest.fixture(scope="module")
def backbone():
    return load_backbone("random")


def test_gram_is_normalised_by_positions_and_symmetric():
    f = torch.rand(2, 5, 6, 7)
    g = gram(f)
    assert g.shape == (2, 5, 5) and torch.allclose(g, g.transpose(1, 2))
    # the same texture twice as large has the same Gram matrix
    assert torch.allclose(gram(f.repeat(1, 1, 2, 2)), g, atol=1e-6)


def test_relative_mse_is_scale_free():
    x, t = torch.rand(3, 4), torch.rand(3, 4)
    assert torch.isclose(relative_mse(1000 * x, 1000 * t), relative_mse(x, t), rtol=1e-4)
    assert relative_mse(t, t) == 0
    assert torch.isclose(relative_mse(torch.zeros(3, 4), t), torch.tensor(1.0))


def test_color_stats_of_a_flat_image():
    img = torch.ones(1, 3, 4, 4) * torch.tensor([0.2, 0.5, 0.9]).view(1, 3, 1, 1)
    mu, cov = color_stats(img)
    assert torch.allclose(mu, torch.tensor([[0.2, 0.5, 0.9]])) and torch.allclose(cov, torch.zeros(1, 3, 3), atol=1e-7)


def test_total_variation_zero_when_flat_and_larger_for_noise():
    assert total_variation(torch.full((1, 3, 8, 8), 0.3)) == 0
    assert total_variation(torch.rand(1, 3, 8, 8)) > total_variation(torch.linspace(0, 1, 8).expand(1, 3, 8, 8))


def test_every_term_is_reported_and_each_vanishes_at_its_target(backbone):
    art = torch.rand(1, 3, 32, 32)
    photo = torch.rand(2, 3, 32, 32)
    target = style_target(backbone, art)
    total, terms = perceptual_loss(backbone, target, LossWeights(), photo, photo)
    assert set(terms) == {"content", "style", "color", "tv"}
    assert terms["content"] == pytest.approx(0, abs=1e-6)
    assert terms["style"] > 0 and terms["color"] > 0
    assert float(total) == pytest.approx(sum(terms.values()), rel=1e-4)
    # the artwork itself, as output, meets the style and colour targets
    _, terms = perceptual_loss(backbone, target, LossWeights(), art, photo[:1])
    assert terms["style"] == pytest.approx(0, abs=1e-5) and terms["color"] == pytest.approx(0, abs=1e-6)


def test_weights_scale_their_terms_and_zero_switches_a_term_off(backbone):
    target = style_target(backbone, torch.rand(1, 3, 32, 32))
    out, photo = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
    _, base = perceptual_loss(backbone, target, LossWeights(1, 1, 1, 1), out, photo)
    _, scaled = perceptual_loss(backbone, target, LossWeights(2, 3, 0, 5), out, photo)
    assert scaled["content"] == pytest.approx(2 * base["content"], rel=1e-4)
    assert scaled["style"] == pytest.approx(3 * base["style"], rel=1e-4)
    assert scaled["color"] == 0 and scaled["tv"] == pytest.approx(5 * base["tv"], rel=1e-4)


def test_loss_gives_gradients_to_the_output_only(backbone):
    target = style_target(backbone, torch.rand(1, 3, 32, 32))
    out = torch.rand(1, 3, 32, 32, requires_grad=True)
    total, _ = perceptual_loss(backbone, target, LossWeights(), out, torch.rand(1, 3, 32, 32))
    total.backward()
    assert out.grad is not None and out.grad.abs().sum() > 0
    assert all(p.grad is None for p in backbone.net.parameters())


def test_style_loss_prefers_the_artworks_palette(backbone):
    art = torch.zeros(1, 3, 32, 32)
    art[:, 2] = 0.8  # a blue artwork
    target = style_target(backbone, art)
    photo = torch.rand(1, 3, 32, 32)
    blue, red = photo.clone(), photo.clone()
    blue[:, 2] = 0.8
    red[:, 0] = 0.8
    _, t_blue = perceptual_loss(backbone, target, LossWeights(), blue * 0.5, photo)
    _, t_red = perceptual_loss(backbone, target, LossWeights(), red * 0.5, photo)
    assert t_blue["color"] < t_red["color"]
