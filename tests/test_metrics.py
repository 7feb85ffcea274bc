"""Quality metrics on constructed cases whose answers are known, and `rotoscope score` end to end."""

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage
from skimage.color import rgb2lab

from conftest import assert_one_line_error, rotoscope
from rotoscope import metrics
from rotoscope.config import TrainConfig
from rotoscope.errors import RotoscopeError


def photo_like(seed=0, size=64):
    """A smooth random picture with edges: blurred noise plus a few rectangles."""
    rng = np.random.default_rng(seed)
    img = ndimage.gaussian_filter(rng.random((size, size, 3)), (3, 3, 0))
    img = (img - img.min()) / (img.max() - img.min())
    for _ in range(4):
        y, x = rng.integers(0, size - 16, 2)
        img[y:y + rng.integers(6, 16), x:x + rng.integers(6, 16)] = rng.random(3)
    return img


def solid(rgb, size=32):
    return np.broadcast_to(np.array(rgb, dtype=np.float64), (size, size, 3)).copy()


def stripes(vertical: bool, size=64, period=8):
    s = ((np.arange(size) // (period // 2)) % 2).astype(np.float64)
    y = np.broadcast_to(s[None, :] if vertical else s[:, None], (size, size))
    return np.repeat(y[..., None], 3, axis=2)


# ---------------------------------------------------------------- identical images: distance 0, similarity 1


def test_identical_images_score_perfectly():
    a = photo_like()
    assert metrics.color_distance(a, a) == pytest.approx(0, abs=1e-9)
    assert metrics.texture_distance(a, a) == pytest.approx(0, abs=1e-12)
    assert metrics.gram_distance(a, a, "random") == pytest.approx(0, abs=1e-6)
    assert metrics.ssim_luminance(a, a) == pytest.approx(1.0)
    assert metrics.edge_correlation(a, a) == pytest.approx(1.0)


def test_inputs_may_be_pil_tensor_or_array():
    a = photo_like()
    pil = Image.fromarray((a * 255).round().astype(np.uint8))
    t = metrics.as_array(pil)
    import torch

    tensor = torch.from_numpy(t).permute(2, 0, 1)[None].float()
    assert metrics.ssim_luminance(pil, tensor) == pytest.approx(1.0, abs=1e-5)
    # a uint8 array is a picture's own 0-255 numbers (it was taken as 0-1: 65 from itself on colour)
    assert metrics.color_distance(np.asarray(pil), pil) == pytest.approx(0, abs=1e-9)
    for bad, says in ((a * 255, "from 0 to 1"), ("photo.png", "not str"), (a[..., :2], "RGB image")):
        with pytest.raises(RotoscopeError, match=says):
            metrics.as_array(bad)


def test_score_filter_takes_one_photo_as_a_path(tiny_filter):
    """A path alone is one photo, not a list of its characters ("t is a folder, not an image")."""
    path, folder, _ = tiny_filter
    one = sorted(folder.glob("*.png"))[0]
    for given in (one, str(one)):
        assert [r["photo"] for r in metrics.score_filter(path, given, size=40).rows] == [one.name]


# ---------------------------------------------------------------- colour


def test_color_distance_of_two_flat_colours_is_their_lab_difference():
    a, b = (0.8, 0.3, 0.2), (0.2, 0.5, 0.7)
    delta_e = np.linalg.norm(rgb2lab(np.array([[a]])) - rgb2lab(np.array([[b]])))
    assert metrics.color_distance(solid(a), solid(b)) == pytest.approx(delta_e, rel=0.02)


def test_color_distance_grows_with_a_colour_shift_and_ignores_layout():
    a = photo_like()
    shifts = [metrics.color_distance(a, np.clip(a + [d, 0, -d], 0, 1)) for d in (0.05, 0.1, 0.2)]
    assert 0 < shifts[0] < shifts[1] < shifts[2]
    # the same pixels in another order: the colour distribution is unchanged
    shuffled = np.random.default_rng(1).permutation(a.reshape(-1, 3)).reshape(a.shape)
    assert metrics.color_distance(a, shuffled) == pytest.approx(0, abs=1e-9)
    assert metrics.ssim_luminance(a, shuffled) < 0.2  # ...while the content is gone


# ---------------------------------------------------------------- texture


def test_texture_distance_sees_orientation():
    v, h = stripes(True), stripes(False)
    assert metrics.texture_distance(v, v.copy()) == pytest.approx(0)
    # same contrast and edge count, perpendicular edges: the orientation halves are disjoint, magnitudes equal
    assert metrics.texture_distance(v, h) == pytest.approx(0.5, abs=0.02)
    o_v, _ = metrics.gradient_histograms(v)
    o_h, _ = metrics.gradient_histograms(h)
    assert 0.5 * np.abs(o_v - o_h).sum() == pytest.approx(1.0, abs=1e-6)


def test_texture_is_blind_to_a_colour_shift_that_keeps_luminance_gradients():
    a = photo_like()
    assert metrics.texture_distance(a, a * 0.999 + 0.0005) < 0.02


# ---------------------------------------------------------------- a known blur


def test_blur_lowers_content_scores_monotonically():
    a = photo_like(size=64)
    blurred = [ndimage.gaussian_filter(a, (s, s, 0)) for s in (0.7, 1.5, 3.0)]
    ssim = [metrics.ssim_luminance(b, a) for b in blurred]
    edges = [metrics.edge_correlation(b, a) for b in blurred]
    texture = [metrics.texture_distance(b, a) for b in blurred]
    assert 1 > ssim[0] > ssim[1] > ssim[2]
    assert 1 > edges[0] > edges[1] > edges[2]
    assert 0 < texture[0] < texture[1] < texture[2]
    # a blur barely moves the colour distribution compared to a real colour change
    assert metrics.color_distance(blurred[0], a) < metrics.color_distance(np.clip(a + [0.2, 0, -0.2], 0, 1), a)


def test_gram_distance_separates_a_close_image_from_a_different_one():
    a = photo_like(0)
    close = np.clip(a + np.random.default_rng(3).normal(0, 0.01, a.shape), 0, 1)
    far = solid((0.9, 0.9, 0.1), 64)
    assert metrics.gram_distance(close, a) < 0.1 < metrics.gram_distance(far, a)


def test_content_metrics_refuse_different_sizes():
    with pytest.raises(RotoscopeError):
        metrics.ssim_luminance(photo_like(size=32), photo_like(size=48))


# ---------------------------------------------------------------- scoring a filter


@pytest.fixture(scope="module")
def tiny_filter(tmp_path_factory):
    """A tiny filter trained for a few steps (the numbers do not matter here, only that scoring runs)."""
    folder = tmp_path_factory.mktemp("photos")
    for i in range(3):
        Image.fromarray((photo_like(i, 48) * 255).astype(np.uint8)).save(folder / f"p{i}.png")
    art = folder.parent / "art.png"
    Image.fromarray((stripes(True, 48) * [230, 120, 40]).astype(np.uint8)).save(art)
    from rotoscope.train import train

    cfg = TrainConfig().replace(channels=(8, 16, 16), res_blocks=1, size=32, steps=3, backbone="random",
                                holdout=0, checkpoint_every=100, eval_every=100, preview_every=100)
    path = folder.parent / "tiny.safetensors"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ROTOSCOPE_HOME", str(tmp_path_factory.mktemp("home")))
        train(art, "tiny", folder, cfg, out=path, log=lambda s: None, progress=False)
    return path, folder, art


def test_score_filter_reports_every_metric_and_a_photo_baseline(tiny_filter):
    path, folder, art = tiny_filter
    photos = sorted(folder.glob("*.png"))
    report = metrics.score_filter(str(path), photos, art, size=40, backbones=("random",))
    assert [r["photo"] for r in report.rows] == [p.name for p in photos]
    mean = report.mean()
    assert set(mean) == {"ssim", "edges", "gram_random", "color", "texture"}
    assert set(report.mean("photo_baseline")) == {"gram_random", "color", "texture"}
    assert all(np.isfinite(v) for v in mean.values())
    no_art = metrics.score_filter(str(path), photos[:1], None, size=40)
    assert set(no_art.mean()) == {"ssim", "edges"}


@pytest.fixture
def cli(capsys):
    """`rotoscope ARGS` run in-process as the console script runs it (a subprocess per call cost seconds of import)."""
    def run(*args):
        code, out, err = rotoscope(*args, capsys=capsys)
        return SimpleNamespace(returncode=code, stdout=out, stderr=err)
    return run


def test_score_cli_end_to_end(tiny_filter, cli):
    path, folder, art = tiny_filter
    r = cli("score", str(path), str(folder), "--artwork", str(art), "--size", "40", "--backbone", "random")
    assert r.returncode == 0, r.stderr
    assert "gram_random" in r.stdout and "unstyled photo" in r.stdout
    assert [line.split()[0] for line in r.stdout.splitlines() if ".png" in line] == ["p0.png", "p1.png", "p2.png"]
    r = cli("score", str(path), str(folder / "p0.png"), "--size", "40", "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert set(data["mean"]) == {"ssim", "edges"} and not data["has_artwork"]


def test_score_cli_bad_input_is_one_line(tiny_filter, tmp_path, cli):
    path, _, _ = tiny_filter
    r = cli("score", str(path), str(tmp_path / "missing.jpg"))
    assert_one_line_error(r.returncode, r.stdout, r.stderr, "missing.jpg")


def test_score_skips_a_broken_file_of_a_folder_as_apply_does_and_says_so(tiny_filter, tmp_path, cli):
    """One broken JPEG among many photos (or artworks for --among) is skipped with a warning naming it, as
    `apply` does with a folder; when nothing at all can be scored, that is the one-line error."""
    path, folder, art = tiny_filter
    photos = tmp_path / "photos"
    photos.mkdir()
    for p in sorted(folder.glob("*.png"))[:2]:
        (photos / p.name).write_bytes(p.read_bytes())
    (photos / "broken.jpg").write_bytes(b"not a jpeg")
    others = tmp_path / "others"
    others.mkdir()
    for name, img in list(constructed_gallery().items())[:2]:
        Image.fromarray((img * 255).astype(np.uint8)).save(others / f"{name}.png")
    (others / "torn.png").write_bytes(b"\x89PNG torn")
    r = cli("score", str(path), str(photos), "--artwork", str(art), "--size", "40", "--backbone", "random",
                "--among", str(others), "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert [row["photo"] for row in data["rows"]] == ["p0.png", "p1.png"]
    assert [Path(s["file"]).name for s in data["skipped"]] == ["broken.jpg", "torn.png"]
    assert data["recognition"]["gallery_size"] == 3
    warned = [line for line in r.stderr.splitlines() if line.startswith("warning: skipped")]
    assert len(warned) == 2 and "broken.jpg" in warned[0] and "torn.png" in warned[1]
    r = cli("score", str(path), str(photos / "broken.jpg"), "--size", "40")
    assert_one_line_error(r.returncode, r.stdout, r.stderr, "broken.jpg")
    for p in others.glob("*.png"):  # nothing left to rank against: said, naming what could not be read
        if p.name != "torn.png":
            p.unlink()
    r = cli("score", str(path), str(photos), "--artwork", str(art), "--size", "40", "--among", str(others))
    assert_one_line_error(r.returncode, r.stdout, r.stderr, "--among: none of the 1 other artwork(s) could be read",
                          "torn.png")


def test_score_refuses_what_is_too_small_to_score_in_one_line(tiny_filter, tmp_path, cli):
    """A scoring size under 16 px, a photo or artwork too thin at the scoring size (SSIM's window, the backbones'
    pooling: tracebacks before), and an --among folder with no artwork in it (the table was silently left out)."""
    path, folder, art = tiny_filter
    thin = tmp_path / "thin.png"
    Image.new("RGB", (3, 400), (200, 40, 40)).save(thin)
    r = cli("score", str(path), str(folder), "--size", "8")
    assert_one_line_error(r.returncode, r.stdout, r.stderr, "scoring size of 8 px is too small")
    r = cli("score", str(path), str(thin), "--size", "40")
    assert_one_line_error(r.returncode, r.stdout, r.stderr, "thin.png is 1x40 at the scoring size (40)")
    r = cli("score", str(path), str(folder), "--artwork", str(thin), "--size", "40")
    assert_one_line_error(r.returncode, r.stdout, r.stderr, "the artwork thin.png is 1x40")
    r = cli("score", str(path), str(folder), str(thin), "--size", "40", "--json")  # among photos: skipped
    assert r.returncode == 0, r.stderr
    assert [Path(s["file"]).name for s in json.loads(r.stdout)["skipped"]] == ["thin.png"]
    (tmp_path / "empty").mkdir()
    r = cli("score", str(path), str(folder), "--artwork", str(art), "--size", "40", "--among",
                str(tmp_path / "empty"))
    assert_one_line_error(r.returncode, r.stdout, r.stderr, "--among: no other artwork to rank against")


# ---------------------------------------------------------------- recognisability


def checker(size=64, period=8):
    return np.logical_xor(stripes(True, size, period) > 0.5, stripes(False, size, period) > 0.5).astype(np.float64)


def constructed_gallery():
    """Five 'artworks' that differ in colour, in texture, or in both."""
    warm_noise = photo_like(1) * np.array([1.0, 0.5, 0.2])
    return {"vertical": stripes(True), "horizontal": stripes(False) * np.array([0.2, 0.4, 1.0]),
            "checker": checker() * np.array([1.0, 0.1, 0.1]), "warm-noise": warm_noise, "grey": solid([0.5] * 3, 64)}


def test_an_output_identical_to_an_artwork_ranks_it_first_on_every_measure():
    arts = constructed_gallery()
    gal = metrics.gallery(arts, size=None)
    for name, img in arts.items():
        order = metrics.rank_artworks(img, gal)
        assert {k: order[k][0] for k in metrics.RECOGNISE_BY} == dict.fromkeys(metrics.RECOGNISE_BY, name), name


def test_texture_ranks_by_strokes_and_colour_by_palette():
    gal = metrics.gallery(constructed_gallery(), size=None)
    # vertical stripes recoloured like the horizontal artwork: texture says vertical, colour says horizontal
    probe = stripes(True) * np.array([0.2, 0.4, 1.0])
    order = metrics.rank_artworks(probe, gal)
    assert order["texture"][0] == "vertical" and order["color"][0] == "horizontal"


def test_recognition_counts_top1_top3_and_the_mean_rank():
    arts = constructed_gallery()
    gal = metrics.gallery(arts, size=None)
    rec = metrics.recognise([("f", "vertical", "a", arts["vertical"]), ("f", "checker", "b", arts["checker"]),
                             ("g", "grey", "c", photo_like(5))], gal)
    assert [r["photo"] for r in rec.ranks] == ["a", "b", "c"]
    s = rec.summary()
    ranks = [r["both"] for r in rec.ranks]
    assert s["both_top1"] == pytest.approx(np.mean([r == 1 for r in ranks]))
    assert s["both_mean_rank"] == pytest.approx(np.mean(ranks))
    assert rec.ranks[0]["both"] == rec.ranks[1]["both"] == 1
    assert set(rec.by_filter()) == {"f", "g"} and rec.by_filter()["f"]["both_top1"] == 1.0
    assert "recognisability" in metrics.format_recognition(rec)


def test_recognition_refuses_a_gallery_it_cannot_rank_in():
    with pytest.raises(RotoscopeError, match="at least two"):
        metrics.gallery({"one": solid([1, 0, 0])}, size=None)
    gal = metrics.gallery(constructed_gallery(), size=None)
    with pytest.raises(RotoscopeError, match="not in the gallery"):
        metrics.recognise([("f", "missing", "p", solid([1, 0, 0]))], gal)


def test_score_cli_ranks_the_artwork_among_others(tiny_filter, tmp_path, cli):
    path, folder, art = tiny_filter
    others = tmp_path / "others"
    others.mkdir()
    for name, img in constructed_gallery().items():
        Image.fromarray((img * 255).astype(np.uint8)).save(others / f"{name}.png")
    r = cli("score", str(path), str(folder), "--artwork", str(art), "--size", "40", "--backbone", "random",
                "--among", str(others), "--json")
    assert r.returncode == 0, r.stderr
    rec = json.loads(r.stdout)["recognition"]
    assert rec["gallery_size"] == 6 and len(rec["ranks"]) == 3
    assert all(1 <= row["both"] <= 6 for row in rec["ranks"])
    r = cli("score", str(path), str(folder), "--artwork", str(art), "--among", str(tmp_path / "nowhere"))
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1 and "nowhere" in r.stderr


def test_the_swag_gram_distance_goes_through_the_softmax_its_training_used():
    """efficientnet-lite0-swag trains on softmaxed features; scoring it on raw Gram matrices would judge another
    statistic. The temperatures come from the reference (the artwork), as in training."""
    a, b = photo_like(0), stripes(True)
    _, temps = metrics.reference_grams(b, "efficientnet-lite0-swag")
    assert temps and all(t > 0 for t in temps.values())
    assert metrics.reference_grams(b, "random")[1] is None
    soft = metrics.gram_matrices(a, "efficientnet-lite0-swag", temps)
    raw = metrics.gram_matrices(a, "efficientnet-lite0-swag")
    assert any(not torch.allclose(soft[k], raw[k]) for k in soft)
    assert metrics.gram_distance(b, b, "efficientnet-lite0-swag") == pytest.approx(0, abs=1e-6)
    assert metrics.gram_distance(a, b, "efficientnet-lite0-swag") > 0.01
