"""The `rotoscope` command end to end: train, apply, list, show, remove; every bad input is one line, no traceback."""

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import assert_one_line_error, make_image, rotoscope
from rotoscope.demo import draw_artwork
from rotoscope.filter import filters_dir
from rotoscope.images import read_provenance

SRC = Path(__file__).resolve().parents[1] / "src"
# the Gram style term: the colour test below was tuned on it (after a 30-step sliced run, fp32, the mean colour
# was still 0.89 of its distance from the artwork's; sliced training is tested in test_train.py and test_losses.py)
TINY_ARGS = ["--steps", "30", "--size", "64", "--batch", "2", "--backbone", "random", "--channels", "8,16,16",
             "--res-blocks", "1", "--no-progress", "--set", "style_match=gram", "--set", "style_size=64"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One filter trained through the real command (a subprocess, as a user runs it), shared by the tests below.

    30 steps of a tiny network: content weight 1 (not the default 3) so the palette visibly moves in so few steps."""
    root = tmp_path_factory.mktemp("cli")
    art = root / "swirls.png"
    draw_artwork(192).save(art)
    env = {**os.environ, "ROTOSCOPE_HOME": str(root / "home"), "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "rotoscope", "train", str(art), "--name", "swirls", *TINY_ARGS,
                        "--lr", "5e-3", "--seed", "1", "--content-weight", "1"], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "saved filter 'swirls'" in r.stderr
    return {"art": art, "filter": root / "home" / "filters" / "swirls.safetensors", "log": r.stderr}


@pytest.fixture
def installed(trained):
    filters_dir().mkdir(parents=True, exist_ok=True)
    shutil.copy(trained["filter"], filters_dir() / "swirls.safetensors")
    return trained


def test_training_lowers_the_held_out_style_loss(installed, capsys):
    code, out, _ = rotoscope("show", "swirls", "--json", capsys=capsys)
    card = json.loads(out)
    hist = card["history"]
    assert hist["holdout_last"]["style"] < hist["holdout_start"]["style"]
    assert hist["holdout_last"]["color"] < hist["holdout_start"]["color"]
    assert card["training"]["size"] == 64 and card["timings"]["steps"] == 30
    # the run printed its settings and a summary
    assert "style_weight" in installed["log"]


def test_applied_colours_move_toward_the_artwork(installed, tmp_path, capsys):
    photo = tmp_path / "street.png"
    import skimage.data

    Image.fromarray(skimage.data.astronaut()).resize((96, 96)).save(photo)
    code, _, err = rotoscope("apply", "swirls", photo, "-o", tmp_path / "out.png", "--no-progress", capsys=capsys)
    assert code == 0 and "wrote" in err
    art = np.asarray(Image.open(installed["art"]).convert("RGB"), np.float32).reshape(-1, 3)
    before = np.asarray(Image.open(photo).convert("RGB"), np.float32).reshape(-1, 3)
    after = np.asarray(Image.open(tmp_path / "out.png").convert("RGB"), np.float32).reshape(-1, 3)
    # the mean colour moves well toward the artwork's (measured: 0.66 of the photo's distance after 30 steps)
    assert np.linalg.norm(after.mean(0) - art.mean(0)) < 0.8 * np.linalg.norm(before.mean(0) - art.mean(0))
    prov = read_provenance(tmp_path / "out.png")
    assert prov["filter"] == "swirls" and prov["source"] == "street.png"


def test_apply_to_a_folder(installed, tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    make_image(photos / "a.png")
    make_image(photos / "b.jpg", size=(33, 21), mode="L")
    rgba = Image.new("RGBA", (20, 30), (200, 10, 10, 128))
    rgba.save(photos / "c.png")
    (photos / "notes.txt").write_text("ignored")
    code, _, err = rotoscope("apply", "swirls", photos, "-o", tmp_path / "out", "--no-progress", capsys=capsys)
    assert code == 0 and "wrote 3 image(s)" in err
    outs = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert outs == ["a.png", "b.jpg", "c.png"]
    assert Image.open(tmp_path / "out" / "b.jpg").size == (33, 21)
    assert Image.open(tmp_path / "out" / "c.png").mode == "RGBA"
    # the same command again paints nothing twice, and says so rather than "wrote"
    code, _, err = rotoscope("apply", "swirls", photos, "-o", tmp_path / "out", "--no-progress", capsys=capsys)
    assert code == 0 and err.strip().splitlines()[-1] == (f"kept 3 image(s) in {tmp_path / 'out'} that an earlier "
                                                          "run painted with the same filter and settings"), err
    # a folder's pictures go into a folder: a picture's name for it is a slip, not a folder to make
    assert_one_line_error(*rotoscope("apply", "swirls", photos, "-o", tmp_path / "all.png", "--no-progress",
                                     capsys=capsys), "give -o a folder name")
    assert not (tmp_path / "all.png").exists()


def test_apply_options(installed, tmp_path, capsys):
    src = make_image(tmp_path / "p.png", size=(40, 30))
    code, _, _ = rotoscope("apply", "swirls", src, "-o", tmp_path / "big.jpg", "--size", "80", "--strength", "0.5",
                           "--preserve-colors", "--precision", "fp32", "--no-progress", capsys=capsys)
    assert code == 0 and Image.open(tmp_path / "big.jpg").size == (80, 60)
    assert read_provenance(tmp_path / "big.jpg")["settings"]["strength"] == 0.5
    code, _, _ = rotoscope("apply", "swirls", src, "--no-progress", capsys=capsys)  # default name beside it
    assert code == 0 and (tmp_path / "p-swirls.png").exists()


def test_filters_show_rm(installed, capsys, monkeypatch):
    from rotoscope.filter import read_card

    monkeypatch.setenv("COLUMNS", "80")  # piped: a pipe has no width, and no column is cut short to fit one
    code, out, _ = rotoscope("filters", capsys=capsys)
    row = next(line for line in out.splitlines() if line.lstrip().startswith("swirls "))
    card = read_card(filters_dir() / "swirls.safetensors")
    last = card["history"]["holdout_last"]
    assert code == 0 and "random" in row
    assert f"{last['style']:.3f}" in row and f"{last['content']:.3f}" in row and card["created"][:10] in row
    code, out, _ = rotoscope("filters", "--json", capsys=capsys)
    assert "swirls" in [f["card"]["name"] for f in json.loads(out)]  # beside the filters the package ships
    code, out, _ = rotoscope("show", "swirls", capsys=capsys)
    assert code == 0 and "held-out" in out and "backbone    random" in out
    code, _, err = rotoscope("rm", "swirls", capsys=capsys)
    assert code == 0 and "removed" in err and not (filters_dir() / "swirls.safetensors").exists()
    assert_one_line_error(*rotoscope("show", "swirls", capsys=capsys), "unknown filter")


@pytest.mark.parametrize("command", ["apply", "train", "train-many", "live", "serve", "demo"])
def test_help_says_what_values_an_option_takes_in_words(command, capsys):
    """A flag takes no value, so '(true or false)' misled (`--preserve-colors false` is an error); a pattern's regex
    is for the parser, not the reader."""
    code, out, _ = rotoscope(command, "--help", capsys=capsys)
    text = " ".join(out.replace("│", " ").split())  # rich's box, whose lines wrap the help
    assert code == 0 and "true or false" not in text and "matching" not in text, text
    assert command not in ("apply", "live") or "between 0 and 1" in text  # a range stays in words: --strength


def test_help_gives_the_tables_defaults_where_an_options_own_is_none(capsys):
    """train's and serve's options default to None (to tell a given value from none), so the help showed no
    default at all; it says the settings table's, as the README promises."""
    from rotoscope.config import ServerConfig, TrainConfig

    for command, says in (("train", (f"Default: {TrainConfig().steps}.", "Default: 16,32,64.")),
                          ("serve", (f"Default: {ServerConfig().max_jobs}.", "Default: 32."))):
        _, out, _ = rotoscope(command, "--help", capsys=capsys)
        text = " ".join(out.replace("│", " ").split())
        assert all(s in text for s in says), (command, text)


def test_a_bare_command_shows_its_help_and_succeeds(capsys):
    """No command is a request for the help, not a usage error: exit 0 (it was click's 2, which the README's
    promise of 'never exit code 2' did not allow)."""
    code, out, _ = rotoscope(capsys=capsys)
    assert code == 0 and "train" in out and "apply" in out


def test_under_torchrun_rank_0_alone_says_a_refusal(tiny_image, monkeypatch, capsys):
    """Every rank meets the same refusal (same command, same files): one line from rank 0, silence and exit 1 from
    the others (each said it before: the line came once per process)."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    for rank, torchrun, said in (("1", True, False), ("0", True, True), ("1", False, True)):
        monkeypatch.setenv("RANK", rank)
        if torchrun:
            monkeypatch.setenv("TORCHELASTIC_RUN_ID", "test")
        else:  # another launcher's RANK (a Kubeflow worker running apply): its errors are its own, and said
            monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
        code, out, err = rotoscope("train", tiny_image, "--name", "poster", "--steps", "2", capsys=capsys)
        assert code == 1 and ("ships with rotoscope" in err) == said and (out + err).strip().count("\n") == 0


def test_weights_lists_backbones(capsys):
    code, out, _ = rotoscope("weights", capsys=capsys)
    assert code == 0 and "vgg16-hed" in out and "random" in out


# ---------------------------------------------------------------- bad input: one line, non-zero, nothing half-written


def leftovers(folder):
    return [p.name for p in Path(folder).rglob("*") if "partial" in p.name]


@pytest.fixture
def bad_files(tmp_path):
    good = make_image(tmp_path / "good.png", size=(64, 64))
    data = good.read_bytes()
    (tmp_path / "truncated.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "words.jpg").write_text("not an image")
    make_image(tmp_path / "huge.png", size=(200, 200))
    return tmp_path


@pytest.mark.parametrize("name,fragment", [("missing.png", "no such file"), ("words.jpg", "not an image"),
                                           ("truncated.png", "cannot decode"), ("huge.png", "safety limit")])
def test_bad_images_to_apply(installed, bad_files, capsys, monkeypatch, name, fragment):
    monkeypatch.setenv("ROTOSCOPE_MAX_PIXELS", "10000")
    out = bad_files / "out.png"
    assert_one_line_error(*rotoscope("apply", "swirls", bad_files / name, "-o", out, capsys=capsys), fragment)
    assert not out.exists() and not leftovers(bad_files)


@pytest.mark.parametrize("name,fragment", [("missing.png", "no such file"), ("words.jpg", "not an image"),
                                           ("truncated.png", "cannot decode"), ("huge.png", "safety limit")])
def test_bad_artworks_to_train(bad_files, capsys, monkeypatch, name, fragment):
    monkeypatch.setenv("ROTOSCOPE_MAX_PIXELS", "10000")
    assert_one_line_error(*rotoscope("train", bad_files / name, "--name", "x", *TINY_ARGS, capsys=capsys), fragment)
    assert not (filters_dir() / "x.safetensors").exists()


def test_photos_folder_with_no_usable_image(bad_files, capsys):
    photos = bad_files / "photos"
    photos.mkdir()
    (photos / "a.jpg").write_text("nope")
    (photos / "b.png").write_bytes(b"\x89PNG\r\n")
    code, out, err = rotoscope("train", bad_files / "good.png", "--name", "x", "--photos", photos, *TINY_ARGS,
                               capsys=capsys)
    assert_one_line_error(code, out, err, "no usable image", "2 unreadable: a.jpg, b.png")
    assert_one_line_error(*rotoscope("train", bad_files / "good.png", "--name", "x", "--photos",
                                     bad_files / "nothing-here", *TINY_ARGS, capsys=capsys), "not found")


def test_bad_filters(bad_files, installed, capsys):
    import torch
    from safetensors.torch import save_file

    src = bad_files / "good.png"
    out = bad_files / "out.png"
    assert_one_line_error(*rotoscope("apply", "swirl", src, "-o", out, capsys=capsys), "did you mean swirls")
    torch.save({"w": torch.zeros(2)}, bad_files / "pickled.safetensors")
    assert_one_line_error(*rotoscope("apply", bad_files / "pickled.safetensors", src, "-o", out, capsys=capsys),
                          "never unpickles")
    save_file({"w": torch.zeros(2)}, str(bad_files / "foreign.safetensors"))
    assert_one_line_error(*rotoscope("apply", bad_files / "foreign.safetensors", src, "-o", out, capsys=capsys),
                          "not a rotoscope filter")
    data = installed["filter"].read_bytes()
    (bad_files / "corrupt.safetensors").write_bytes(data[: len(data) // 3])
    assert_one_line_error(*rotoscope("apply", bad_files / "corrupt.safetensors", src, "-o", out, capsys=capsys),
                          "corrupt")
    assert_one_line_error(*rotoscope("show", bad_files / "nope.safetensors", capsys=capsys), "no such filter file")
    assert not out.exists() and not leftovers(bad_files)


def test_bad_options(installed, bad_files, capsys):
    src = bad_files / "good.png"
    assert_one_line_error(*rotoscope("apply", "swirls", src, "-o", bad_files / "out.xyz", capsys=capsys),
                          "cannot write")
    assert_one_line_error(*rotoscope("apply", "swirls", src, "--precision", "fp8", "--no-progress", capsys=capsys),
                          "precision")
    assert_one_line_error(*rotoscope("train", src, "--name", "x", "--backbone", "resnet", "--steps", "2",
                                     "--no-progress", capsys=capsys), "unknown backbone")
    assert_one_line_error(*rotoscope("train", src, "--name", "x", "--channels", "8,16", capsys=capsys), "--channels")
    assert_one_line_error(*rotoscope("train", src, "--name", "x", "--color-match", "histogram", "--steps", "2",
                                     "--no-progress", capsys=capsys), "color_match")
    assert_one_line_error(*rotoscope("train", src, "--name", "bad/name", capsys=capsys), "invalid filter name")
    # the settings table's words for every range, not the option parser's ("Input should be less than ...")
    assert_one_line_error(*rotoscope("apply", "swirls", src, "--strength", "3", capsys=capsys),
                          "strength must be between 0 and 1 (got 3.0)")
    assert_one_line_error(*rotoscope("apply", "swirls", src, "--crf", "99", capsys=capsys),
                          "crf must be between 0 and 51 (got 99)")
    assert_one_line_error(*rotoscope("apply", "swirls", src, "--no-such-option", capsys=capsys), "no-such-option")
    assert_one_line_error(*rotoscope("train", src, capsys=capsys), "--name")
    assert not leftovers(bad_files)


def test_console_script_reports_errors_the_same_way(tmp_path):
    env = {**os.environ, "ROTOSCOPE_HOME": str(tmp_path), "PYTHONPATH": str(SRC)}
    r = subprocess.run([sys.executable, "-m", "rotoscope", "apply", "nothing", str(tmp_path / "x.png")], env=env,
                       capture_output=True, text=True, timeout=300)
    assert_one_line_error(r.returncode, r.stdout, r.stderr, "no such file or folder")


def test_train_never_replaces_a_filter_without_overwrite(installed, bad_files, capsys):
    """A typo must not destroy a trained filter: an existing name is refused in one line, unless --overwrite."""
    from rotoscope.filter import registry_path

    before = registry_path("swirls").read_bytes()
    assert_one_line_error(*rotoscope("train", bad_files / "good.png", "--name", "swirls", *TINY_ARGS,
                                     capsys=capsys), "exists", "--overwrite")
    assert registry_path("swirls").read_bytes() == before
    code, out, err = rotoscope("train", bad_files / "good.png", "--name", "swirls", *TINY_ARGS, "--steps", "2",
                               "--overwrite", "--progress", capsys=capsys)
    assert code == 0, err
    assert registry_path("swirls").read_bytes() != before
    assert out == "" and "step" in err  # the progress bar is on stderr: `rotoscope train ... | cat` got a torn one


def test_a_finished_run_is_not_resumed_under_new_settings_but_more_steps_continue_it(bad_files, capsys):
    """Resuming a run that finished would only save the same weights again, with a card naming other settings."""
    from rotoscope.filter import load_filter, registry_path

    art = bad_files / "good.png"
    code, _, err = rotoscope("train", art, "--name", "done", *TINY_ARGS, "--steps", "2", "--no-progress",
                             capsys=capsys)
    assert code == 0, err
    saved = registry_path("done").read_bytes()
    for more in ([], ["--overwrite"], ["--out", bad_files / "elsewhere.safetensors"]):  # no way round it
        assert_one_line_error(*rotoscope("train", art, "--name", "done", *TINY_ARGS, "--steps", "2", "--size", "48",
                                         "--resume", *more, capsys=capsys),
                              "the checkpoint of 'done' was trained with other settings (size 64 -> 48); resume "
                              "it with its own")
    assert registry_path("done").read_bytes() == saved and not (bad_files / "elsewhere.safetensors").exists()
    code, _, err = rotoscope("train", art, "--name", "done", *TINY_ARGS, "--steps", "4", "--resume",
                             "--no-progress", capsys=capsys)
    assert code == 0 and "resuming 'done' at step 2" in err and load_filter("done").card["timings"]["steps"] == 4


def test_ctrl_c_says_interrupted_and_exits_130(installed, tmp_path, capsys, monkeypatch):
    """typer turns Ctrl-C into an exit code it returns outside standalone mode: the command must not end with 0."""
    from rotoscope import apply as ap

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
        yield

    monkeypatch.setattr(ap, "apply_path", interrupted)
    code, _, err = rotoscope("apply", "swirls", make_image(tmp_path / "p.png"), "-o", tmp_path / "o.png",
                             capsys=capsys)
    assert code == 130 and err.strip().splitlines()[-1] == "interrupted", err
    assert not (tmp_path / "o.png").exists()


def test_the_command_line_loads_torch_inside_its_error_handling(tmp_path, capsys, monkeypatch):
    """torch takes a second or two to load, the first second of every command: Ctrl-C then is "interrupted" and
    130 like Ctrl-C later, not a traceback. So importing the command line (the console script's first step, outside
    any handling) loads no torch, and `rotoscope --help` and a command's `--help` need none."""
    env = {**os.environ, "ROTOSCOPE_HOME": str(tmp_path), "PYTHONPATH": str(SRC)}
    probe = "import sys, rotoscope, rotoscope.cli; print('torch' in sys.modules, 'numpy' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=300)
    assert r.stdout.split() == ["False", "False"], r.stdout + r.stderr
    for args in (["--help"], ["train", "--help"], ["apply", "--help"]):
        r = subprocess.run([sys.executable, "-c", f"import sys; sys.argv = ['rotoscope', *{args}]\n"
                            "from rotoscope.cli import main\ntry:\n    main()\nexcept SystemExit:\n    pass\n"
                            "print('torch' in sys.modules)"], env=env, capture_output=True, text=True, timeout=300)
        assert "Usage" in r.stdout and r.stdout.split()[-1] == "False", args + [r.stdout + r.stderr]
    from rotoscope import devices

    def loading(*args):  # Ctrl-C while the command's first import runs
        raise KeyboardInterrupt

    monkeypatch.setattr(devices, "configure_threads", loading)
    code, _, err = rotoscope("filters", capsys=capsys)
    assert code == 130 and err.strip() == "interrupted", err


def test_ctrl_c_in_training_keeps_a_checkpoint_and_exits_130(tmp_path, capsys, monkeypatch):
    from conftest import interrupt_training_at

    art = tmp_path / "art.png"
    draw_artwork(96).save(art)
    interrupt_training_at(monkeypatch, 2)
    code, _, err = rotoscope("train", art, "--name", "cut", *TINY_ARGS, capsys=capsys)
    assert code == 130, err
    assert err.strip().splitlines()[-1] == "interrupted at step 2/30; run the same command with --resume to continue"
    # the same command without --resume would start from random weights over the kept run: refused
    assert_one_line_error(*rotoscope("train", art, "--name", "cut", *TINY_ARGS, capsys=capsys),
                          "an interrupted run of 'cut' is kept at step 2 of 30: --resume continues it, --overwrite "
                          "starts afresh")


def test_kill_stops_training_as_ctrl_c_does_keeping_its_checkpoint(tmp_path):
    """SIGTERM (`kill`, systemd, `docker stop`, `timeout`) ended training with exit 143, no word and no checkpoint:
    up to a minute of work lost. Now it stops as Ctrl-C does."""
    import signal

    art = tmp_path / "art.png"
    draw_artwork(96).save(art)
    env = {**os.environ, "ROTOSCOPE_HOME": str(tmp_path / "home"),
           "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    p = subprocess.Popen([sys.executable, "-m", "rotoscope", "train", str(art), "--name", "killed", *TINY_ARGS,
                          "--steps", "100000", "--set", "checkpoint_every=100000"], env=env,
                         stderr=subprocess.PIPE, text=True)
    try:
        while not (line := p.stderr.readline()).startswith("training filter") and line:
            pass
        assert line, "training never started"
        time.sleep(3)  # some steps in, none checkpointed yet
        p.send_signal(signal.SIGTERM)
        err = p.communicate(timeout=120)[1]
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 130, err
    last = err.strip().splitlines()[-1]
    assert re.fullmatch(r"interrupted at step \d+/100000; run the same command with --resume to continue", last), err
    step = int(last.split()[3].split("/")[0])
    from rotoscope.train import checkpoint_state

    ckpt = tmp_path / "home" / "runs" / "killed" / "checkpoint.safetensors"
    assert step > 0 and checkpoint_state(ckpt)["run"]["step"] == step


def test_a_fresh_run_and_rm_leave_no_earlier_runs_story_behind(tmp_path, capsys, monkeypatch):
    """`explain` reads the run's folder: the checkpoint, curves and previews of an earlier run of the name (an
    interrupted one replaced with --overwrite, or a removed filter's) must not appear as the new filter's."""
    from conftest import interrupt_training_at
    from rotoscope.data import PhotoSet
    from rotoscope.paths import runs_dir

    art, other = tmp_path / "art.png", tmp_path / "other.png"
    draw_artwork(96).save(art)
    make_image(other, (96, 96))
    restore = interrupt_training_at(monkeypatch, 25)
    code, _, err = rotoscope("train", art, "--name", "x", *TINY_ARGS, capsys=capsys)
    assert code == 130, err
    monkeypatch.setattr(PhotoSet, "batch", restore)
    story = runs_dir() / "x" / "story"
    assert (story / "preview-000009.jpg").exists(), list(story.iterdir())  # the interrupted run's (of 30 steps)
    code, _, err = rotoscope("train", other, "--name", "x", *TINY_ARGS, "--steps", "2", "--overwrite",
                             capsys=capsys)
    assert code == 0, err
    assert sorted(p.name for p in story.glob("preview-*")) == [f"preview-00000{i}.jpg" for i in (0, 1, 2)]
    events = list((runs_dir() / "x" / "tensorboard").glob("events*"))
    assert len(events) == 1, events  # this run's curves only
    code, _, err = rotoscope("rm", "x", capsys=capsys)
    assert code == 0, err
    assert not (runs_dir() / "x" / "checkpoint.safetensors").exists() and not story.exists()


def test_a_shipped_filters_name_is_taken_like_any_other(tmp_path, capsys):
    """A user filter of a shipped filter's name would hide it from every command: refused by train and mix as by
    the server, unless --overwrite."""
    from rotoscope.filter import registry_path

    art = tmp_path / "art.png"
    draw_artwork(96).save(art)
    for args in (["train", art, *TINY_ARGS, "--steps", "1"], ["mix", "great-wave", "the-scream"]):
        assert_one_line_error(*rotoscope(*args, "--name", "great-wave", capsys=capsys),
                              "a filter named 'great-wave' ships with rotoscope; pass --overwrite")
        assert not registry_path("great-wave").exists()
    code, _, err = rotoscope("mix", "great-wave", "the-scream", "--name", "great-wave", "--overwrite", capsys=capsys)
    assert code == 0 and registry_path("great-wave").exists(), err
    code, _, err = rotoscope("rm", "great-wave", capsys=capsys)  # the shipped one is back
    assert code == 0 and "ships with rotoscope" in rotoscope("rm", "great-wave", capsys=capsys)[2]


def test_rm_and_mix_never_drop_an_interrupted_run(tmp_path, capsys, monkeypatch):
    """rm removes a filter's finished run with it, but not an interrupted retraining of its name (Ctrl-C at step
    3000 of a --overwrite run, then rm, must not lose the 3000 steps); a mix over that name is refused as train is."""
    from conftest import interrupt_training_at
    from rotoscope.data import PhotoSet
    from rotoscope.paths import runs_dir

    art = tmp_path / "art.png"
    draw_artwork(96).save(art)
    code, _, err = rotoscope("train", art, "--name", "w", *TINY_ARGS, "--steps", "2", capsys=capsys)
    assert code == 0, err
    restore = interrupt_training_at(monkeypatch, 3)
    code, _, err = rotoscope("train", art, "--name", "w", *TINY_ARGS, "--overwrite", capsys=capsys)
    assert code == 130, err
    monkeypatch.setattr(PhotoSet, "batch", restore)
    ckpt = runs_dir() / "w" / "checkpoint.safetensors"
    assert_one_line_error(*rotoscope("mix", "great-wave", "the-scream", "--name", "w", capsys=capsys), "exists")
    code, _, err = rotoscope("rm", "w", capsys=capsys)
    assert code == 0 and ckpt.exists(), err  # the interrupted run is kept, with the filter gone
    assert_one_line_error(*rotoscope("mix", "great-wave", "the-scream", "--name", "w", capsys=capsys),
                          "an interrupted run of 'w' is kept at step 3 of 30: `rotoscope train --resume` continues "
                          "it, --overwrite drops it")
    code, _, err = rotoscope("train", art, "--name", "w", *TINY_ARGS, "--resume", capsys=capsys)
    assert code == 0 and "resuming 'w' at step 3" in err, err


def test_a_refused_training_and_rm_leave_no_empty_run_folder(bad_files, tmp_path, capsys):
    from rotoscope.paths import runs_dir

    (tmp_path / "empty").mkdir()
    assert_one_line_error(*rotoscope("train", bad_files / "good.png", "--name", "e1", "--photos", tmp_path / "empty",
                                     *TINY_ARGS, capsys=capsys))
    assert not (runs_dir() / "e1").exists()
    code, _, err = rotoscope("train", bad_files / "good.png", "--name", "kept", *TINY_ARGS, "--steps", "2",
                             capsys=capsys)
    assert code == 0 and (runs_dir() / "kept").is_dir(), err
    code, _, err = rotoscope("rm", "kept", capsys=capsys)
    assert code == 0 and not (runs_dir() / "kept").exists(), err


def test_help_says_each_allowed_value_once_and_keeps_a_values_spelling(capsys):
    code, out, _ = rotoscope("apply", "--help", capsys=capsys)
    text = " ".join(out.replace("│", " ").split())
    assert code == 0 and "(auto, cpu, mps, cuda or cuda:N)" not in text and "(one of auto, bf16" not in text
    assert "auto (cuda, else mps" in text and "Auto (" not in text


def test_video_settings_given_for_a_still_picture_are_said_to_do_nothing(installed, tmp_path, capsys):
    from conftest import make_scene

    src = make_scene(tmp_path / "p.png")
    code, _, err = rotoscope("apply", "swirls", src, "-o", tmp_path / "o.png", "--crf", "10", "--no-stabilize",
                             "--engine", "torch", capsys=capsys)
    assert code == 0 and "note: --crf and --no-stabilize are for videos" in err, err
