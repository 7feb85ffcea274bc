"""The settings table: every setting has a default, a line of help and what it may be; validate() holds the
Python API, the CLI and the server to the same ranges, with one line that names the setting."""

import dataclasses

import pytest

from conftest import rotoscope
from rotoscope import config
from rotoscope.config import (TABLES, ApplySettings, NetConfig, ServerConfig, TrainConfig, VideoConfig, fields_of,
                              parse_sets, parse_value)
from rotoscope.errors import RotoscopeError


@pytest.mark.parametrize("table", list(TABLES.values()), ids=list(TABLES))
def test_every_setting_has_help_and_bounds(table):
    for f in dataclasses.fields(table):
        if f.name == "net":
            continue
        m = f.metadata
        assert m.get("help"), f"{table.__name__}.{f.name} has no help"
        bounded = m.get("choices") or m.get("pattern") or (m.get("lo") is not None and m.get("hi") is not None)
        assert bounded or config._field_type(f) is bool, f"{table.__name__}.{f.name} has no bounds"


@pytest.mark.parametrize("table", list(TABLES.values()), ids=list(TABLES))
def test_every_default_passes_its_own_check(table):
    config.validate(table())


def test_every_training_and_apply_setting_is_reachable_from_the_command_line():
    """`--set key=value` takes any field: each one's default, written as text, reads back as itself."""
    for table in (TrainConfig, ApplySettings, VideoConfig, ServerConfig):
        defaults = {**dataclasses.asdict(table()), **(dataclasses.asdict(NetConfig()) if table is TrainConfig else {})}
        for name, f in fields_of(table).items():
            value = defaults[name]
            text = ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
            assert parse_sets(table, [f"{name}={text}"]) == {name: value}, name


@pytest.mark.parametrize("table,name,bad,words", [
    (TrainConfig, "steps", -5, "steps must be between 1 and 1000000 (got -5)"),
    (TrainConfig, "steps", 0, "steps must be between 1"),
    (TrainConfig, "batch", 0, "batch must be between 1 and 64"),
    (TrainConfig, "size", 3, "size must be between 16 and 1024"),
    (TrainConfig, "color_match", "histogram", "unknown color_match 'histogram': use one of sliced, moments"),
    (TrainConfig, "precision", "fp8", "unknown precision 'fp8': use one of auto, bf16, fp16, fp32"),
    (TrainConfig, "device", "gpu", "device must be auto, cpu, mps, cuda or cuda:N (got 'gpu')"),
    (TrainConfig, "lr", float("nan"), "lr must be a number"),
    (ApplySettings, "size", -5, "size must be between 1 and 32768 (got -5)"),
    (ApplySettings, "strength", 1.5, "strength must be between 0 and 1"),
    (ApplySettings, "engine", "tensorrt", "unknown engine 'tensorrt': use one of auto, torch, onnx, openvino"),
    (VideoConfig, "crf", 70, "crf must be between 0 and 51"),
    (VideoConfig, "flow_preset", "slow", "unknown flow_preset 'slow'"),
    (ServerConfig, "port", 70000, "port must be between 1 and 65535"),
    (ServerConfig, "port", 0, "port must be between 1 and 65535"),  # any free port: the address said would be wrong
    (ServerConfig, "token", "short", "token must be 8 characters or more, with no spaces (got 5 characters)"),
    (VideoConfig, "max_seconds", 0.0, "max_seconds must be between 0.001"),  # no frames: not the clip's fault
])
def test_out_of_range_settings_are_refused_with_one_line_naming_them(table, name, bad, words):
    obj = dataclasses.replace(table(), **{name: bad})
    with pytest.raises(RotoscopeError) as e:
        obj.validate()
    assert words in str(e.value) and "\n" not in str(e.value)


def test_network_settings_are_checked_too():
    with pytest.raises(RotoscopeError, match="channels must be 3 numbers between 1 and 512"):
        TrainConfig().replace(channels=(16, 0, 64)).validate()
    with pytest.raises(RotoscopeError, match="channels takes 3 values"):
        TrainConfig().replace(channels=(16, 32)).validate()


def test_text_values_are_read_by_type():
    f = fields_of(TrainConfig)
    assert parse_value(f["channels"], "32,64,128") == (32, 64, 128)
    assert parse_value(fields_of(ApplySettings)["preserve_colors"], "yes") is True
    assert parse_value(fields_of(ApplySettings)["size"], "none") is None
    with pytest.raises(RotoscopeError, match="steps takes a whole number between 1 and 1000000 \\(got 'many'\\)"):
        parse_value(f["steps"], "many")
    with pytest.raises(RotoscopeError, match="max_seconds takes a number between 0.001 and 1e\\+07 \\(got 'abc'\\)"):
        parse_value(fields_of(VideoConfig)["max_seconds"], "abc")
    with pytest.raises(RotoscopeError, match="unknown setting 'stepz'"):
        parse_sets(TrainConfig, ["stepz=3"])
    with pytest.raises(RotoscopeError, match="key=value"):
        parse_sets(TrainConfig, ["steps"])


def test_the_loss_defaults_are_the_recipes():
    from rotoscope.losses import LossWeights, StyleTarget

    cfg = TrainConfig()
    assert LossWeights() == LossWeights.of(cfg)
    assert [f.default for f in dataclasses.fields(StyleTarget) if f.name == "color_match"] == [cfg.color_match]


def test_cli_refuses_a_bad_setting_in_one_line(tiny_image, capsys):
    code, _, err = rotoscope("train", tiny_image, "--name", "x", "--steps", "-5", capsys=capsys)
    assert code == 1 and err.strip() == "error: steps must be between 1 and 1000000 (got -5)"
    code, _, err = rotoscope("train", tiny_image, "--name", "x", "--set", "tv_weight=-1", capsys=capsys)
    assert code == 1 and err.strip() == "error: tv_weight must be between 0 and 1e+06 (got -1.0)"
    code, _, err = rotoscope("apply", "great-wave", tiny_image, "--set", "crf=70", capsys=capsys)
    assert code == 1 and err.strip() == "error: crf must be between 0 and 51 (got 70)"
    code, _, err = rotoscope("apply", "great-wave", tiny_image, "--size", "-5", capsys=capsys)
    assert code == 1 and "size must be between 1 and 32768 (got -5)" in err


def test_the_python_api_is_held_to_the_same_ranges(tiny_image):
    import rotoscope as api

    with pytest.raises(RotoscopeError, match="steps must be between 1"):
        api.train(tiny_image, "x", steps=0)
    with pytest.raises(RotoscopeError, match="size must be between 1"):
        api.stylize("great-wave", tiny_image, size=-5)


def test_numpy_numbers_are_taken_as_the_python_numbers_they_are():
    """np.float32(0.5) was "strength must be a number"; they are held as Python numbers (cards are JSON). A NumPy
    array is not a number, a NaN is still refused."""
    import json

    import numpy as np

    s = ApplySettings(strength=np.float32(0.5), size=np.int64(64), preserve_colors=np.bool_(True)).validate()
    assert (s.strength, s.size, s.preserve_colors) == (0.5, 64, True)
    assert [type(v) for v in (s.strength, s.size, s.preserve_colors)] == [float, int, bool]
    t = TrainConfig().replace(channels=(np.int64(8), 16, 16), steps=np.int32(5)).validate()
    assert t.net.channels == (8, 16, 16) and type(t.net.channels[0]) is int and type(t.steps) is int
    json.dumps(t.to_dict())
    for bad, says in ((np.float32("nan"), "must be a number"), (np.array([0.5]), "must be a number")):
        with pytest.raises(RotoscopeError, match=says):
            ApplySettings(strength=bad).validate()


def bad_value(f) -> str:
    """A value the table refuses for this field, as text."""
    m = f.metadata
    if m.get("choices"):
        return "nope"
    if m.get("pattern"):
        return "!! !!"
    if config._field_type(f) is tuple:
        return ",".join(["0"] * len(f.default))
    return str(m["lo"] - 1)


def test_every_training_setting_is_reachable_and_checked_from_the_server():
    """The server takes the same names (`set=key=value`, like the CLI's --set) and the same ranges."""
    from fastapi.testclient import TestClient

    from rotoscope.server.app import create_app

    with TestClient(create_app(ServerConfig(), run_jobs=False)) as client:
        for name, f in fields_of(TrainConfig).items():
            r = client.post("/api/jobs/train", files={"artwork": ("a.png", b"not looked at", "image/png")},
                            data={"name": "reach", "set": f"{name}={bad_value(f)}"})
            assert r.status_code == 422 and name in r.json()["detail"], (name, r.status_code, r.text)
        r = client.post("/api/jobs/train", files={"artwork": ("a.png", b"x", "image/png")},
                        data={"name": "reach", "set": "no_such=1"})
        assert r.status_code == 422 and "unknown setting 'no_such'" in r.json()["detail"]


def test_the_printed_settings_name_the_content_layer_the_backbone_chose():
    """An empty content_layer leaves the layer to the backbone: the run said nothing of which (a blank line)."""
    from rotoscope.config import describe

    said = {line.split()[0]: line for line in describe(TrainConfig(), ("b5_expand",)).splitlines()}
    assert said["content_layer"].endswith("(the backbone's: b5_expand)")
    said = {line.split()[0]: line for line in describe(TrainConfig().replace(content_layer="b4_expand"),
                                                       ("b4_expand",)).splitlines()}
    assert said["content_layer"].split() == ["content_layer", "b4_expand"]
