"""The training set: a stable held-out split, reproducible crops, unreadable files skipped and counted."""

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import make_image
from rotoscope.data import Photo, folder_photos, load_photos, prepare, sample_photos, split_holdout
from rotoscope.errors import RotoscopeError


def photos(n, size=(80, 60)):
    rng = np.random.default_rng(0)
    return [Photo(f"p{i}.png", Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), np.uint8)))
            for i in range(n)]


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
    assert [p.name for p in found] == ["a.png", "b.jpg"] and skipped == ["broken.png"]
    assert len(warnings) == 1 and "broken.png" in warnings[0]
    data = load_photos(tmp_path, 32, 0.5, warn=warnings.append)
    assert data.skipped == ["broken.png"] and len(data.train) + len(data.holdout) == 2


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
