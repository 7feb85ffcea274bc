"""The training set: a stable held-out split, reproducible crops, unreadable files skipped and counted."""

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import make_image
from rotoscope.data import (SAMPLE_PHOTOS, Photo, PhotoSet, crop_is_flat, folder_photos, is_flat, load_photos,
                            prepare, sample_photos, split_holdout)
from rotoscope.errors import RotoscopeError
from rotoscope.images import to_tensor


def photos(n, size=(80, 60)):
    rng = np.random.default_rng(0)
    return [Photo(f"p{i}.png", Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), np.uint8)))
            for i in range(n)]


def test_a_photo_and_its_copy_fall_on_the_same_side_of_the_exam(tmp_path):
    """Three photos and a copy of each: the held-out photo was the copy of one the filter trained on, and the
    explain page called it never seen. Photos that look alike (the audit's near-duplicates) are held out together
    or trained on together."""
    from conftest import make_scene

    originals = [Image.open(make_scene(tmp_path / f"s{i}.png", seed=i)).convert("RGB") for i in range(3)]
    for share in (0.15, 0.34, 0.5):
        pics = [Photo(f"s{i}.png", im) for i, im in enumerate(originals)] + \
            [Photo(f"s{i}_copy.png", im.resize((im.width // 2, im.height // 2))) for i, im in enumerate(originals)]
        data = prepare(pics, 32, share)
        held = {n.replace("_copy", "") for n in data.holdout_names}
        trained = {n.replace("_copy", "") for n in data.train_names}
        assert not held & trained, (share, data.holdout_names, data.train_names)
        assert data.train_names
    # one group of look-alikes only: nothing can be held out honestly, so nothing is
    assert split_holdout(["a", "b", "c"], 0.34, [("a", "b"), ("b", "c")]) == set()


def test_holdout_is_stable_when_photos_are_added_and_never_everything():
    names = [f"photo{i}.jpg" for i in range(20)]
    held = split_holdout(names, 0.15)
    assert len(held) == 3
    more = split_holdout(names + [f"new{i}.jpg" for i in range(3)], 0.15)
    assert len(held & more) >= 2  # adding photos moves at most the boundary
    assert split_holdout(["only.jpg"], 0.5) == set()
    assert len(split_holdout(["a", "b"], 0.9)) == 1
    assert split_holdout(names, 0) == set()


def flat_photos(n, size=(80, 60)):
    """n photos of one flat colour each (photo i is grey level 20 * (i + 1)): a crop, resized or flipped, keeps its
    photo's colour, so every crop says which photo it came from."""
    return [Photo(f"p{i}.png", Image.new("RGB", size, (20 * (i + 1),) * 3)) for i in range(n)]


def source_of(crop: torch.Tensor) -> int:
    """Which flat photo a crop was cut from (its grey level); the crop must be flat."""
    level = crop.mul(255).round()
    assert level.min() == level.max(), "a crop of a flat photo is flat"
    return int(level.flatten()[0]) // 20 - 1


def test_held_out_photos_are_never_in_the_training_crops():
    data = prepare(flat_photos(6), 32, 0.34)
    assert len(data.holdout) == 2 and len(data.train) == 4
    assert not set(data.train_names) & set(data.holdout_names)
    held = {int(n[1:-4]) for n in data.holdout_names}
    assert held == {int(n[1:-4]) for n in split_holdout([f"p{i}.png" for i in range(6)], 0.34)}
    # the held-out tensors are the held-out photos (not merely their names)
    assert {source_of(t) for t in data.holdout} == held
    assert {source_of(t) for t in data.train} == set(range(6)) - held
    seen = set()
    for step in range(60):
        batch = data.batch(step, 2, 32, seed=0)
        assert batch.shape == (2, 3, 32, 32)
        seen |= {source_of(c) for c in batch}
    assert not seen & held  # no crop of a held-out photo, in 120 crops
    assert seen == set(range(6)) - held  # and every training photo is used
    exam = data.holdout_batch(32)
    assert exam.shape == (2, 3, 32, 32) and {source_of(c) for c in exam} == held


def test_crops_depend_only_on_seed_and_step():
    data = prepare(photos(3), 32, 0.0)
    assert torch.equal(data.batch(7, 3, 32, seed=1), data.batch(7, 3, 32, seed=1))
    assert not torch.equal(data.batch(7, 3, 32, seed=1), data.batch(8, 3, 32, seed=1))
    assert not torch.equal(data.batch(7, 3, 32, seed=1), data.batch(7, 3, 32, seed=2))


def test_photos_are_resized_once_to_leave_room_for_zoom():
    data = prepare(photos(2, (400, 300)) + photos(1, (20, 30)), 64, 0.0)
    for t in data.train:
        assert 64 <= min(t.shape[-2:]) <= 128
    assert data.batch(0, 4, 64, 0).shape == (4, 3, 64, 64)


def test_folder_photos_skip_and_count_unreadable_files(tmp_path):
    make_image(tmp_path / "a.png")
    make_image(tmp_path / "b.jpg", seed=1)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    (tmp_path / "readme.txt").write_text("not a photo, not even tried")
    warnings = []
    found, skipped = folder_photos(tmp_path, warn=warnings.append)
    assert [p.name for p in found] == ["a.png", "b.jpg"] and skipped == {"broken.png": "unreadable"}
    assert len(warnings) == 1 and "broken.png" in warnings[0]
    data = load_photos(tmp_path, 32, 0.5, warn=warnings.append)
    assert data.skipped == {"broken.png": "unreadable"} and len(data.train) + len(data.holdout) == 2


def test_a_folder_with_no_usable_image_is_refused(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"nope")
    with pytest.raises(RotoscopeError, match=r"no usable image.*\(1 unreadable: broken.png\)"):
        folder_photos(tmp_path, warn=lambda m: None)
    with pytest.raises(RotoscopeError, match="not found"):
        folder_photos(tmp_path / "missing")
    (tmp_path / "broken.png").unlink()
    with pytest.raises(RotoscopeError, match="no usable image"):
        folder_photos(tmp_path)


def test_the_sample_set_ships_with_an_installed_package():
    sample = sample_photos()
    assert len(sample) >= 8 and all(p.image.mode == "RGB" for p in sample)
    assert len({p.name for p in sample}) == len(sample)


# ---- what a crop is: a square window of the photo, scaled uniformly, mirrored left-right at most ----

def coordinate_photo(w, h):
    """A (1, 3, h, w) tensor whose red says the column (x / w), green the row (y / h) and blue is a 1-pixel
    checkerboard: any window cut from it and resized says where it was cut, how big it was, whether it was
    mirrored, and (blue) whether the zoom-out was filtered."""
    y, x = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64),
                          indexing="ij")
    return torch.stack([x / w, y / h, (x + y) % 2])[None].float()


# how closely window_of measures a window: torch's antialiased resize keeps a ramp only nearly linear (measured:
# within 0.22 pixel of the side and 0.11 of the offset at zooms up to 2)
SIDE, OFFSET = 0.3, 0.2


def window_of(crop, w, h, margin=3):
    """(x0, y0, side_x, side_y, mirrored) of the square window a crop of coordinate_photo(w, h) shows.

    A bilinear resize keeps a linear ramp (nearly) linear away from the borders: the ramp's slope gives the
    window's side, its value the window's offset (source pixel centres, as align_corners=False maps them)."""
    size = crop.shape[-1]
    r, g = crop[0].double(), crop[1].double()
    inner = size - 1 - 2 * margin
    slope_x = float((r[:, size - 1 - margin] - r[:, margin]).mean()) * w / inner  # source px per output px
    slope_y = float((g[size - 1 - margin, :] - g[margin, :]).mean()) * h / inner
    side_x, side_y = abs(slope_x) * size, slope_y * size
    mirrored = slope_x < 0
    # the left-most output column's source centre is x0 + (j + 0.5) * side / size - 0.5
    left = float(r[:, size - 1 - margin if mirrored else margin].mean()) * w
    x0 = left - (margin + 0.5) * side_x / size + 0.5
    y0 = float(g[margin, :].mean()) * h - (margin + 0.5) * side_y / size + 0.5
    return x0, y0, side_x, side_y, mirrored


def photoset(train=(), holdout=()):
    return PhotoSet(list(train), list(holdout), [f"t{i}" for i in range(len(train))],
                    [f"h{i}" for i in range(len(holdout))])


def test_a_training_crop_is_a_square_window_inside_the_photo_at_every_zoom_from_size_to_the_short_side():
    size, w, h = 16, 30, 19  # short side 19: the zoom draws a window side from 16, 17, 18 or 19
    data = photoset([coordinate_photo(w, h)])
    sides, xs, ys, mirrored = set(), set(), set(), []
    for step in range(100):
        batch = data.batch(step, 2, size, seed=3)
        assert batch.shape == (2, 3, size, size)
        for crop in batch:
            x0, y0, sx, sy, flip = window_of(crop, w, h)
            assert sx == pytest.approx(sy, abs=0.01), "square: the window is not stretched"
            side = round(sx)
            assert sx == pytest.approx(side, abs=SIDE), "a whole number of pixels"
            assert size <= side <= h
            assert x0 == pytest.approx(round(x0), abs=OFFSET) and y0 == pytest.approx(round(y0), abs=OFFSET)
            assert 0 <= round(x0) <= w - side and 0 <= round(y0) <= h - side, "inside the photo"
            sides.add(side)
            xs.add(round(x0))
            ys.add(round(y0))
            mirrored.append(flip)
    assert sides == set(range(size, h + 1))  # every zoom is drawn, the photo's short side included
    assert 0 in xs and w - size in xs and 0 in ys and h - size in ys  # windows reach every edge
    assert 0.3 < sum(mirrored) / len(mirrored) < 0.7  # mirrored left-right about half the time


def test_a_training_crop_is_mirrored_left_right_only_and_keeps_its_colours():
    size, w, h = 16, 24, 20
    data = photoset([coordinate_photo(w, h)])
    for step in range(40):
        for crop in data.batch(step, 2, size, seed=5):
            _, _, _, sy, _ = window_of(crop, w, h)
            assert sy > 0, "never upside down"
            assert crop[1, -1].mean() > crop[1, 0].mean()  # green still grows downwards
            # red is a ramp from left to right (or mirrored), never the checkerboard: channels stay in place
            assert (crop[0].diff(dim=0).abs() < 1e-5).all()


def test_a_zoomed_out_crop_is_filtered_not_aliased():
    """A 1-pixel checkerboard seen through a window 1.5 to 2 times the crop is close to flat grey, as a camera
    would see it; a plain bilinear resize would turn it into stripes."""
    size, w, h = 16, 40, 32
    data = photoset([coordinate_photo(w, h)])
    checked = 0
    for step in range(60):
        for crop in data.batch(step, 2, size, seed=7):
            side = round(window_of(crop, w, h)[2])
            if 1.5 * size <= side < 2 * size:
                blue = crop[2, 2:-2, 2:-2]
                assert float(blue.std()) < 0.03 and float((blue - 0.5).abs().max()) < 0.1
                checked += 1
    assert checked >= 10


def test_the_exam_is_the_centre_square_of_each_held_out_photo_scaled_whole():
    size = 16
    shapes = [(40, 26), (26, 40), (27, 27), (31, 26)]  # landscape, portrait, square, an odd margin
    data = photoset(holdout=[coordinate_photo(w, h) for w, h in shapes])
    exam = data.holdout_batch(size)
    assert exam.shape == (len(shapes), 3, size, size)
    for crop, (w, h) in zip(exam, shapes):
        x0, y0, sx, sy, mirrored = window_of(crop, w, h)
        s = min(w, h)
        assert not mirrored
        assert sx == pytest.approx(s, abs=SIDE) and sy == pytest.approx(s, abs=SIDE), "the whole short side"
        assert x0 == pytest.approx((w - s) // 2, abs=OFFSET) and y0 == pytest.approx((h - s) // 2, abs=OFFSET)
        blue = crop[2, 2:-2, 2:-2]  # zoomed out 1.6 times: filtered, not aliased
        assert float(blue.std()) < 0.03


def test_photos_are_resized_keeping_their_shape():
    size = 32
    data = prepare([Photo("big.png", Image.new("RGB", (400, 300))), Photo("small.png", Image.new("RGB", (20, 30))),
                    Photo("fits.png", Image.new("RGB", (50, 40)))], size, 0.0)
    (hb, wb), (hs, ws), (hf, wf) = (tuple(t.shape[-2:]) for t in data.train)
    assert hb == 2 * size and wb == round(400 * 2 * size / 300)  # shrunk: short side 2*size, same aspect
    assert ws == size and hs == round(30 * size / 20)  # enlarged: short side size, same aspect
    assert (wf, hf) == (50, 40)  # short side already between size and 2*size: untouched
    # the audit keeps the original sizes, and where the photos came from
    assert data.sizes == {"big.png": (400, 300), "small.png": (20, 30), "fits.png": (50, 40)}
    assert data.source == "" and prepare(flat_photos(2), size, 0.0, source="mine").source == "mine"


def test_any_positive_share_holds_out_exactly_one_photo_at_least():
    names = [f"photo{i}.jpg" for i in range(20)]
    assert len(split_holdout(names, 0.01)) == 1
    assert len(split_holdout(names, 0.1)) == 2


def test_a_folder_records_its_source_and_passes_warnings_on(tmp_path):
    make_image(tmp_path / "a.png")
    make_image(tmp_path / "b.png", seed=1)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    warnings = []
    data = load_photos(tmp_path, 32, 0.0, warn=warnings.append)
    assert data.source == str(tmp_path) and data.skipped == {"broken.png": "unreadable"}
    assert len(warnings) == 1 and "broken.png" in warnings[0]
    assert data.sizes == {"a.png": (48, 40), "b.png": (48, 40)}


def test_without_a_folder_training_uses_the_sample_photos():
    data = load_photos(None, 32, 0.25)
    assert data.source == "scikit-image sample photos" and data.skipped == {}
    assert sorted(data.train_names + data.holdout_names) == sorted(SAMPLE_PHOTOS)
    assert set(data.holdout_names) == split_holdout(list(SAMPLE_PHOTOS), 0.25)
    for t in data.train + data.holdout:
        assert 32 <= min(t.shape[-2:]) <= 64
    assert data.batch(0, 2, 32, 0).shape == (2, 3, 32, 32)


def test_the_sample_photos_are_scikit_images_own_pixels_in_rgb():
    import skimage.data

    for photo in sample_photos():
        arr = getattr(skimage.data, photo.name)()
        rgb = np.asarray(photo.image)
        assert rgb.shape == arr.shape[:2] + (3,)
        expected = arr if arr.ndim == 3 else np.repeat(arr[..., None], 3, axis=2)  # grey -> R = G = B
        assert np.array_equal(rgb, expected[..., :3])


def test_sample_photos_in_other_number_types_become_8_bit(monkeypatch):
    """A scikit-image release that ships a photo as 0..1 floats or as wider integers still gives 8-bit RGB."""
    import skimage.data

    ramp = np.repeat(np.linspace(0, 1, 12 * 10).reshape(10, 12, 1), 3, axis=2)  # RGB 0..1 floats, 1.0 included
    monkeypatch.setattr(skimage.data, "float_photo", lambda: ramp, raising=False)
    monkeypatch.setattr(skimage.data, "int_photo", lambda: (ramp * 200).astype(np.int32), raising=False)
    monkeypatch.setattr("rotoscope.data.SAMPLE_PHOTOS", ("float_photo", "int_photo"))
    as_float, as_int = (np.asarray(p.image).astype(int) for p in sample_photos())
    assert as_float.max() == 255 and as_float.min() == 0
    assert np.abs(as_float - ramp * 255).max() <= 1  # scaled, not clipped to 0/1
    assert np.array_equal(as_int, (ramp * 200).astype(int))  # already 0..255: kept


def test_a_folder_error_counts_every_unreadable_file_and_names_the_first_three(tmp_path):
    for i in range(4):
        (tmp_path / f"bad{i}.png").write_bytes(b"nope")
    with pytest.raises(RotoscopeError) as e:
        folder_photos(tmp_path, warn=lambda m: None)
    message = str(e.value)
    assert "\n" not in message and "4 unreadable" in message
    assert [n for n in (f"bad{i}.png" for i in range(4)) if n in message] == ["bad0.png", "bad1.png", "bad2.png"]
    assert message.endswith("bad0.png, bad1.png, bad2.png, ...)")  # one left unnamed: said so
    (tmp_path / "bad3.png").unlink()
    with pytest.raises(RotoscopeError) as e:
        folder_photos(tmp_path, warn=lambda m: None)
    assert str(e.value).endswith("(3 unreadable: bad0.png, bad1.png, bad2.png)")  # all named: no "..."
    for i in range(3):
        (tmp_path / f"bad{i}.png").unlink()
    with pytest.raises(RotoscopeError) as e:
        folder_photos(tmp_path, warn=lambda m: None)
    assert str(e.value) == f"no usable image in {tmp_path}"  # nothing unreadable: nothing said about it


def test_a_flat_photo_is_skipped_with_a_warning(tmp_path):
    """One flat colour has nothing to teach, and its crops make each instance norm divide by almost zero: one
    such photo among six stopped training with a NaN at step 3 (the gradients grew ~300x a norm)."""
    make_image(tmp_path / "a.png")
    Image.new("RGB", (48, 40), (200, 10, 10)).save(tmp_path / "red.png")
    warnings = []
    found, skipped = folder_photos(tmp_path, warn=warnings.append)
    assert [p.name for p in found] == ["a.png"] and skipped == {"red.png": "one flat colour"}
    assert warnings == ["warning: skipping red.png: one flat colour, nothing to learn from"]
    from rotoscope.truthful.audit import audit_photoset

    odd = dict(audit_photoset(load_photos(tmp_path, 32, 0.0, warn=warnings.append)).odd)
    assert odd["red.png"] == "one flat colour (skipped)"  # what the card and `explain` say of it
    (tmp_path / "a.png").unlink()
    (tmp_path / "broken.png").write_bytes(b"nope")
    with pytest.raises(RotoscopeError, match=r"no usable image.*\(1 unreadable: broken.png; 1 flat: red.png\)"):
        folder_photos(tmp_path, warn=lambda m: None)


def sky_photo(w=160, h=128, seed=0, detail=0.25):
    """Clear blue above a strip of detail (a quarter of the height): not a flat photo, but many of its windows are."""
    arr = np.zeros((h, w, 3), np.uint8)
    arr[:] = (90, 140, 220)
    top = h - max(1, round(h * detail))
    arr[top:] = np.random.default_rng(seed).integers(0, 256, (h - top, w, 3))
    return Image.fromarray(arr)


def test_windows_of_clear_sky_are_drawn_again_so_no_training_crop_is_flat():
    """A flat crop overflows a training step as a flat photo does; a photo that is mostly sky keeps training."""
    data = prepare([Photo("sky.png", sky_photo())], 32, 0.0)
    crops = [c[None] for step in range(40) for c in data.batch(step, 4, 32, seed=0)]
    assert not any(crop_is_flat(c) for c in crops)
    again = prepare([Photo("sky.png", sky_photo())], 32, 0.0)
    assert torch.equal(data.batch(3, 4, 32, seed=0), again.batch(3, 4, 32, seed=0))  # still a function of the step


def test_a_thin_strip_of_detail_under_a_sky_gives_the_largest_window_when_every_draw_is_flat():
    data = prepare([Photo("strip.png", sky_photo(160, 128, detail=0.03))], 32, 0.0)
    crops = [c[None] for step in range(30) for c in data.batch(step, 4, 32, seed=0)]
    assert not any(crop_is_flat(c) for c in crops)


def test_photos_without_flat_windows_get_the_crops_they_always_got(monkeypatch):
    """Redrawing costs no random draw unless a window is flat: other photo sets (and their resumed runs) see the
    same crops as before the redraw existed."""
    import rotoscope.data as data_mod

    data = prepare(photos(3), 32, 0.0)
    before = [data.batch(step, 4, 32, seed=5) for step in range(5)]
    monkeypatch.setattr(data_mod, "FLAT_TRIES", 1)
    assert all(torch.equal(b, data.batch(step, 4, 32, seed=5)) for step, b in enumerate(before))


def test_a_crop_is_flat_as_a_photo_is_by_its_luminance_not_its_darkness():
    rng = np.random.default_rng(0)
    base = np.full((40, 48, 3), 30.0)
    for spread_levels, flat in ((0.0, True), (0.5, True), (2.0, False), (40.0, False)):
        arr = np.clip(base + rng.normal(0, spread_levels, (40, 48, 1)), 0, 255).round().astype(np.uint8)
        img = Image.fromarray(arr)
        assert crop_is_flat(to_tensor(img)) == is_flat(img) == flat, spread_levels


def test_one_picture_given_as_the_photos_folder_says_so(tmp_path):
    """`--photos x.jpg` said "photos folder not found", as if the file were missing."""
    one = make_image(tmp_path / "x.png")
    with pytest.raises(RotoscopeError, match=r"photos takes a folder of pictures \(or, from Python, a list of files\): "
                                             r".*x\.png is one file"):
        folder_photos(one)


def test_the_photo_sets_fingerprint_knows_its_photos_not_their_order():
    """A resumed run must see the same photos: the same ones given in another order are the same set."""
    pics = photos(4)
    assert prepare(pics, 32, 0.25).fingerprint() == prepare(pics[::-1], 32, 0.25).fingerprint()
    other = pics[:3] + [Photo("p3.png", Image.new("RGB", (80, 60), (200, 30, 30)))]
    assert prepare(other, 32, 0.25).fingerprint() != prepare(pics, 32, 0.25).fingerprint()


def test_a_chain_of_look_alikes_is_one_group():
    """Look-alikes of look-alikes are one group (3000 photos in a chain: quick with path halving, 47 s for 1200
    before), so nothing of it is held out while another photo can be."""
    names = [f"p{i}.jpg" for i in range(3000)]
    chain = [(a, b) for a, b in zip(names, names[1:])]
    assert split_holdout(names, 0.15, chain) == set()
    assert split_holdout([*names, "alone.jpg"], 0.01, chain) == {"alone.jpg"}
