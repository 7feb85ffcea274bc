"""Losses: each term is zero at its target, grows away from it, and is scale-free across backbones."""

import multiprocessing

import numpy as np
import pytest
import torch

from rotoscope.backbones import load_backbone
from rotoscope import losses
from rotoscope.losses import (LossWeights, color_directions, color_stats, feature_directions, gram, perceptual_loss,
                              relative_mse, sliced_color_loss, sliced_feature_loss, sorted_projections, style_target,
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


def test_the_pixel_term_is_reported_only_when_weighted_and_is_the_mean_absolute_difference(backbone):
    target = style_target(backbone, torch.rand(1, 3, 32, 32))
    out, aim = torch.full((1, 3, 32, 32), 0.5), torch.full((1, 3, 32, 32), 0.2)
    _, plain = perceptual_loss(backbone, target, LossWeights(), out, aim)
    assert "pixel" not in plain  # the four terms every card before it recorded
    total, terms = perceptual_loss(backbone, target, LossWeights(pixel=2.0), out, aim)
    assert terms["pixel"] == pytest.approx(2.0 * 0.3, rel=1e-5)
    assert float(total) == pytest.approx(sum(terms.values()), rel=1e-4)
    _, met = perceptual_loss(backbone, target, LossWeights(pixel=2.0), aim, aim)
    assert met["pixel"] == 0


def test_layer_weights_tilt_from_fine_to_broad_and_average_one():
    assert losses.layer_weights(4, 1.0) == pytest.approx([1, 1, 1, 1])  # today's recipe: all equal
    fine = losses.layer_weights(5, 0.5)
    assert fine == sorted(fine, reverse=True) and fine[1] == pytest.approx(fine[0] / 2)
    broad = losses.layer_weights(5, 2.0)
    assert broad == sorted(broad) and broad[-1] == pytest.approx(2 * broad[-2])
    assert sum(fine) == pytest.approx(5) and sum(broad) == pytest.approx(5)


@pytest.mark.parametrize("match", ["gram", "sliced"])
def test_layer_decay_weighs_the_style_layers_and_one_is_the_plain_mean(backbone, match, monkeypatch):
    target = style_target(backbone, torch.rand(1, 3, 32, 32), style_match=match)
    out, photo = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
    _, even = perceptual_loss(backbone, target, LossWeights(1, 1, 1, 1, 1.0), out, photo)
    # each layer's own term, by giving one layer all the weight at a time
    n = len(backbone.spec.style_layers)
    per_layer = []
    for i in range(n):
        monkeypatch.setattr(losses, "layer_weights", lambda k, d, i=i: [float(j == i) * k for j in range(k)])
        per_layer.append(perceptual_loss(backbone, target, LossWeights(1, 1, 1, 1), out, photo)[1]["style"])
    monkeypatch.undo()
    assert even["style"] == pytest.approx(sum(per_layer) / n, rel=1e-4)
    _, tilted = perceptual_loss(backbone, target, LossWeights(1, 1, 1, 1, 0.5), out, photo)
    w = losses.layer_weights(n, 0.5)
    assert tilted["style"] == pytest.approx(sum(wi * t for wi, t in zip(w, per_layer)) / n, rel=1e-4)
    # the layers differ, so the tilt shows: by how much depends on the random inputs (once 0.09% under the AVX2
    # caps, which rel=1e-3 called equal); a decay that was ignored would give the very same number
    assert tilted["style"] != pytest.approx(even["style"], rel=1e-5)


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


def palette(colors, counts, shape=(32, 32)) -> torch.Tensor:
    """A (1, 3, H, W) image made of the given colours in the given pixel counts, shuffled."""
    px = torch.cat([torch.tensor(c).expand(n, 3) for c, n in zip(colors, counts)])
    px = px[torch.randperm(len(px), generator=torch.Generator().manual_seed(1))]
    return px.T.reshape(1, 3, *shape)


def sliced(img, art):
    dirs = color_directions()
    return float(sliced_color_loss(img, sorted_projections(art, dirs)[0], dirs))


def test_sliced_colour_loss_sees_the_distribution_not_where_the_pixels_are():
    art = palette([(0.9, 0.1, 0.1), (0.1, 0.2, 0.9)], [512, 512])
    assert sliced(art, art) == pytest.approx(0, abs=1e-10)
    assert sliced(art.flip(-1).transpose(-1, -2), art) == pytest.approx(0, abs=1e-10)  # rearranged pixels
    # a smaller picture with the same palette in the same shares (quantiles are resampled to its pixel count)
    assert sliced(palette([(0.9, 0.1, 0.1), (0.1, 0.2, 0.9)], [128, 128], (16, 16)), art) == pytest.approx(0, abs=1e-10)
    # the loss grows with the square of a colour shift
    shift = torch.tensor([0.05, -0.05, 0.1]).view(1, 3, 1, 1)
    assert sliced(art + 2 * shift, art) == pytest.approx(4 * sliced(art + shift, art), rel=1e-4)


def test_sliced_colour_holds_a_two_colour_palette_that_moments_cannot_tell_from_a_smear():
    # red and blue in equal shares vs a smear along the red-blue line with the very same mean and covariance
    red, blue = torch.tensor([1.0, 0, 0]), torch.tensor([0, 0, 1.0])
    art = palette([tuple(red), tuple(blue)], [512, 512])
    t = torch.linspace(-1, 1, 1024)
    t = (t - t.mean()) / t.std(unbiased=False)  # mean 0, variance 1, like the +-1 of two equal shares
    smear = ((red + blue) / 2 + t[:, None] * (red - blue) / 2).T.reshape(1, 3, 32, 32)
    (mu_a, cov_a), (mu_s, cov_s) = color_stats(art), color_stats(smear)
    assert torch.allclose(mu_a, mu_s, atol=1e-6) and torch.allclose(cov_a, cov_s, atol=1e-5)
    assert sliced(smear, art) > 0.01  # moments see nothing; the sliced term does


def test_colour_match_is_chosen_in_the_target_and_unknown_names_are_refused(backbone):
    art = palette([(1.0, 0, 0), (0, 0, 1.0)], [512, 512])
    out = torch.rand(2, 3, 24, 24, requires_grad=True)
    target = style_target(backbone, art, "sliced")
    total, terms = perceptual_loss(backbone, target, LossWeights(), out, torch.rand(2, 3, 24, 24))
    _, own = perceptual_loss(backbone, target, LossWeights(), art, art)
    assert terms["color"] > 0 and own["color"] == pytest.approx(0, abs=1e-8)
    total.backward()  # gradients flow through the sort
    assert out.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="color_match"):
        style_target(backbone, art, "histogram")


def test_sliced_style_loss_sees_the_feature_distribution_not_where_features_are():
    t = torch.randn(1, 6, 16, 16)
    art = t[0].flatten(1)
    dirs = feature_directions(6, None)
    assert float(sliced_feature_loss(t, art, dirs)) == pytest.approx(0, abs=1e-10)
    shuffled = t.flatten(2)[..., torch.randperm(256)].reshape(1, 6, 16, 16)
    assert float(sliced_feature_loss(shuffled, art, dirs)) == pytest.approx(0, abs=1e-10)
    # scale-free, and 1 for painting every position with the artwork's mean feature
    assert float(sliced_feature_loss(1000 * t, 1000 * art, dirs)) == pytest.approx(0, abs=1e-10)
    mean = art.mean(1).view(1, 6, 1, 1).expand(1, 6, 16, 16)
    assert float(sliced_feature_loss(mean, art, dirs)) == pytest.approx(1, rel=0.01)


def test_sliced_style_loss_tells_apart_what_the_gram_matrix_cannot():
    # one channel: half the positions fire at 2, half at 0, against all at sqrt(2): the same Gram matrix (mean
    # square 2), but one is strokes on a ground and the other an even wash
    strokes = torch.cat([torch.full((128,), 2.0), torch.zeros(128)]).view(1, 1, 16, 16)
    wash = torch.full((1, 1, 16, 16), 2 ** 0.5)
    assert torch.allclose(gram(strokes), gram(wash))
    assert float(sliced_feature_loss(wash, strokes[0].flatten(1), feature_directions(1, None))) > 0.5


def test_sliced_style_directions_are_fixed_for_evaluation_and_drawn_per_step_for_training():
    assert torch.equal(feature_directions(8, None), feature_directions(8, None))
    assert torch.equal(feature_directions(8, 3), feature_directions(8, 3))  # a resumed run draws the same
    assert not torch.equal(feature_directions(8, 3), feature_directions(8, 4))
    assert torch.allclose(feature_directions(8, 5).norm(dim=0), torch.ones(8))


def test_style_match_is_chosen_in_the_target_and_the_artwork_meets_it(backbone):
    art = torch.rand(1, 3, 32, 32)
    target = style_target(backbone, art, style_match="sliced")
    assert target.style_match == "sliced" and not target.grams and set(target.features) == set(backbone.spec.style_layers)
    out = torch.rand(2, 3, 32, 32, requires_grad=True)
    total, terms = perceptual_loss(backbone, target, LossWeights(), out, torch.rand(2, 3, 32, 32), draw=7)
    _, own = perceptual_loss(backbone, target, LossWeights(), art, art)
    assert terms["style"] > 0 and own["style"] == pytest.approx(0, abs=1e-6)
    total.backward()  # gradients flow through the sort
    assert out.grad.abs().sum() > 0
    gram_target = style_target(backbone, art, style_match="gram")  # the other choice scores by Gram matrices
    assert gram_target.style_match == "gram" and gram_target.features is None and gram_target.grams
    _, by_gram = perceptual_loss(backbone, gram_target, LossWeights(), out, torch.rand(2, 3, 32, 32))
    assert by_gram["style"] > 0 and by_gram["style"] != terms["style"]
    with pytest.raises(ValueError, match="style_match"):
        style_target(backbone, art, style_match="histogram")


def test_sort_last_sorts_and_carries_gradients_as_torch_sort_does():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, 40, 257, generator=g)
    x[0, :, :50] = 0.0  # ties, as ReLU features give
    x[1, :, :5] = -0.0
    x[2, 0, 0] = 1e-42  # a float32 denormal
    assert torch.equal(losses.sort_last(x), x.sort(dim=-1).values)  # no gradient: values only
    a, b = x[1:].clone().requires_grad_(), x[1:].clone().requires_grad_()
    w = torch.randn(2, 40, 257, generator=g)
    mine, ref = losses.sort_last(a), b.sort(dim=-1).values
    assert torch.equal(mine, ref)
    (mine * w).sum().backward()
    (ref * w).sum().backward()
    distinct = x[1:] != 0  # tied values may trade their gradients; distinct ones may not
    assert torch.equal(a.grad[distinct], b.grad[distinct])
    # another dtype or device takes torch.sort itself
    assert torch.equal(losses.sort_last(x.double()), x.double().sort(dim=-1).values)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_sort_last_sorts_autocasts_half_types_with_numpy_as_torch_sort_does(dtype, monkeypatch):
    """Under bf16 autocast the sliced terms' projections come as bf16: sorted by NumPy too, in their own type."""
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 30, 301, generator=g).relu().to(dtype)  # ReLU zeros and 8 or 11 bits: many ties
    x[0, 0, 0] = float("-0")
    calls = []
    monkeypatch.setattr(losses, "sort_rows", lambda a: calls.append(a.dtype) or a.sort(axis=-1))
    values = losses.sort_last(x)
    assert values.dtype == dtype and torch.equal(values, x.sort(dim=-1).values)
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    mine, ref = losses.sort_last(a), b.sort(dim=-1).values
    assert mine.dtype == dtype and torch.equal(mine, ref)
    assert calls == [np.float32, np.float64]  # NumPy sorted both, not torch.sort
    w = torch.randn(2, 30, 301, generator=g).to(dtype)
    (mine * w).sum().backward()
    (ref * w).sum().backward()
    xf = x.float()
    alone = (xf[..., :, None] == xf[..., None, :]).sum(-1) == 1  # values met once in their row keep their gradient
    assert alone.sum() > 1000 and torch.equal(a.grad[alone], b.grad[alone])


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_sorts_shared_among_threads_give_what_one_thread_gives(two_threads, monkeypatch):
    """sort_rows splits big sorts by rows among torch's threads: the same values, the same permutations."""
    g = torch.Generator().manual_seed(4)
    x = torch.randn(4, 33, 1000, generator=g).relu()  # ties, as ReLU features give; 33 rows split unevenly
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    shared = losses.sort_last(x), losses.sort_last(a)
    assert losses._sort_pool is not None and losses._sort_pool[1] == 2  # the threads were used
    monkeypatch.setattr(losses, "_PARALLEL_SORT_MIN", 1 << 62)  # everything on one thread
    alone = losses.sort_last(x), losses.sort_last(b)
    w = torch.randn(4, 33, 1000, generator=g)
    (shared[1] * w).sum().backward()
    (alone[1] * w).sum().backward()
    assert torch.equal(shared[0], alone[0]) and torch.equal(shared[1], alone[1]) and torch.equal(a.grad, b.grad)
    assert torch.equal(shared[0], x.sort(dim=-1).values)


def _sorted_in_child(x):
    assert torch.get_num_threads() == 2  # inherited (no torch work here: OpenMP's threads do not survive a fork)
    return losses.sort_last(x).numpy(), losses._sort_pool[0]  # NumPy: torch's shared-memory pickling hung here


def test_sorting_threads_work_in_a_forked_child(two_threads):
    """A process forked after the sort's threads started (a Ray or multiprocessing worker) starts its own."""
    x = torch.randn(2, 64, 1024)
    losses.sort_last(x)  # the parent's threads
    with multiprocessing.get_context("fork").Pool(1) as pool:
        child, child_pool = pool.apply_async(_sorted_in_child, (x,)).get(timeout=60)
    assert torch.equal(torch.from_numpy(child), x.sort(dim=-1).values)
    assert child_pool != losses._sort_pool[0]  # the child made its own threads
