"""Fuzzing, bounded: schemathesis against the server's OpenAPI document (no 500, every answer matches the document),
and Hypothesis mutating the bytes of a small valid PNG, JPEG, filter file and clip before the openers read them:
every failure is a RotoscopeError with a one-line message, never another exception type.

Bounds (2 loaded cores): the schemathesis test about 15-30 s, the three opener fuzzes under 20 s together.
"""

from __future__ import annotations

import io
import json
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import make_clip, make_filter, require_module

require_module("hypothesis", 'pip install -e ".[test]"')
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

from rotoscope.errors import RotoscopeError  # noqa: E402

pytestmark = pytest.mark.timeout(180)

FUZZ = settings(deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _one_line(e: RotoscopeError) -> None:
    text = str(e)
    assert text and "\n" not in text and "Traceback" not in text, repr(text)


def _opened_or_refused(open_):
    """What `open_()` returns, or None when it refused in one RotoscopeError line (any other exception fails)."""
    try:
        return open_()
    except RotoscopeError as e:
        _one_line(e)
        return None


# ---------------------------------------------------------------- byte mutations


@st.composite
def mutated(draw, data: bytes, keep: int = 0) -> bytes:
    """`data` with a few drawn edits past its first `keep` bytes: bytes overwritten, bit flips, a run inserted or
    cut, the tail truncated, or a second file's bytes appended (a polyglot)."""
    b = bytearray(data)
    for _ in range(draw(st.integers(1, 6))):
        if len(b) <= keep + 1:
            break
        kind = draw(st.sampled_from(["set", "flip", "insert", "cut", "truncate", "interesting"]))
        i = draw(st.integers(keep, len(b) - 1))
        if kind == "set":
            b[i] = draw(st.integers(0, 255))
        elif kind == "flip":
            b[i] ^= 1 << draw(st.integers(0, 7))
        elif kind == "insert":
            b[i:i] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "cut":
            del b[i:i + draw(st.integers(1, 64))]
        elif kind == "truncate":
            del b[i:]
        else:  # sizes and counts a parser trusts: 0, -1, 2^31, 2^32-1
            v = draw(st.sampled_from([0, 0xFFFFFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFF, 1]))
            b[i:i + 4] = struct.pack(draw(st.sampled_from([">I", "<I"])), v)
    return bytes(b)


def _image_bytes(fmt: str) -> bytes:
    rng = np.random.default_rng(5)
    img = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8), "RGB")
    buf = io.BytesIO()
    if fmt == "JPEG":
        exif = Image.Exif()
        exif[0x0112] = 6  # an orientation: exif_transpose parses it
        img.save(buf, fmt, quality=80, exif=exif.tobytes())
    else:
        img.save(buf, fmt)
    return buf.getvalue()


PNG, JPEG = _image_bytes("PNG"), _image_bytes("JPEG")


@settings(FUZZ, max_examples=800)
@given(data=st.one_of(mutated(PNG, keep=8), mutated(JPEG, keep=2), mutated(PNG), mutated(JPEG)))
def test_the_image_opener_fails_only_with_one_line(tmp_path_factory, data):
    from rotoscope.images import load_rgb

    path = tmp_path_factory.getbasetemp() / "fuzz-image.png"
    path.write_bytes(data)
    img = _opened_or_refused(lambda: load_rgb(path))
    if img is not None:
        assert img.mode == "RGB" and img.width >= 1 and img.height >= 1


@pytest.fixture(scope="module")
def filter_bytes(tmp_path_factory) -> bytes:
    return make_filter(tmp_path_factory.mktemp("fuzz-filter") / "f.safetensors").read_bytes()


def _with_card(data: bytes, change) -> bytes:
    """The filter file with its card (JSON in the safetensors header's metadata) changed by `change(card)`."""
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    card = json.loads(header["__metadata__"]["rotoscope.card"])
    header["__metadata__"]["rotoscope.card"] = json.dumps(change(card))
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)
    return len(head).to_bytes(8, "little") + head + data[8 + n:]


JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats() | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                                     max_size=3), max_leaves=6)
ARCH_KEYS = st.sampled_from(["channels", "res_blocks", "kernel_outer"])


def _card_change(key, value, whole):
    def change(card):
        if whole is not None:
            return whole
        card["architecture"][key] = value
        return card
    return change


@settings(FUZZ, max_examples=500)
@given(data=st.data())
def test_the_filter_opener_fails_only_with_one_line(filter_bytes, tmp_path_factory, data):
    """Bytes mutated anywhere (the header's length, its JSON, the weights), or the card's architecture given any
    JSON value: loading either works or is one RotoscopeError line (never a hang building a huge network)."""
    from rotoscope.filter import load_filter_file

    if data.draw(st.booleans(), label="card-level"):
        key, value = data.draw(ARCH_KEYS), data.draw(JSON_VALUES | st.lists(st.integers(-2**20, 2**40), max_size=4))
        whole = data.draw(st.none() | st.just({"name": "x"}) | st.just({"architecture": []}))
        blob = _with_card(filter_bytes, _card_change(key, value, whole))
    else:
        header_len = int.from_bytes(filter_bytes[:8], "little")
        blob = data.draw(mutated(filter_bytes) | mutated(filter_bytes[:8 + header_len + 64]), label="bytes")
    path = tmp_path_factory.getbasetemp() / "fuzz-filter.safetensors"
    path.write_bytes(blob)
    filt = _opened_or_refused(lambda: load_filter_file(path))
    if filt is not None:
        out = filt.net(__import__("torch").rand(1, 3, 8, 8))
        assert out.shape == (1, 3, 8, 8)


@pytest.fixture(scope="module")
def clip_bytes(tmp_path_factory) -> bytes:
    return make_clip(tmp_path_factory.mktemp("fuzz-clip") / "c.mp4", frames=6, size=(32, 24), audio=False).read_bytes()


@settings(FUZZ, max_examples=250)
@given(data=st.data())
def test_the_video_opener_fails_only_with_one_line(clip_bytes, tmp_path_factory, data):
    """probe() then decoding every frame: a damaged clip is refused in one line or decoded (with warnings)."""
    from rotoscope.video.source import decode, probe

    blob = data.draw(mutated(clip_bytes, keep=0))
    path = tmp_path_factory.getbasetemp() / "fuzz-clip.mp4"
    path.write_bytes(blob)
    warnings: list[str] = []
    frames = _opened_or_refused(lambda: list(decode(probe(path), 16, 12, warnings.append)))
    if frames is not None:
        assert all(rgb.shape == (12, 16, 3) for _, _, rgb in frames)
        assert all("\n" not in w for w in warnings)


# ---------------------------------------------------------------- schemathesis against the OpenAPI document


def test_the_openapi_document_holds_under_schemathesis(tiny_filter, tmp_path, monkeypatch):
    """Every operation of /openapi.json, with generated (and type-wrong) parameters and bodies, in process: no 500,
    and every answer's status, content type and body match the document. Jobs are recorded, never run."""
    require_module("schemathesis", 'pip install -e ".[test]"')
    import schemathesis
    from fastapi.testclient import TestClient

    import rotoscope.filter as filter_module
    from rotoscope.config import ServerConfig
    from rotoscope.server import create_app

    monkeypatch.setattr(filter_module, "SHIPPED_DIR", tmp_path / "no-shipped-filters")
    app = create_app(ServerConfig(), run_jobs=False)
    with TestClient(app):  # the lifespan: the apply pool stays up for the whole run
        schema = schemathesis.openapi.from_asgi("/openapi.json", app)
        # removing the filter last: the other operations find it installed
        operations = sorted((r.ok() for r in schema.get_all_operations()), key=lambda o: o.method.upper() == "DELETE")
        assert len(operations) >= 14, [o.label for o in operations]
        answered: dict[str, set[int]] = {}
        calls = sum(_fuzz_operation(op, answered) for op in operations)
    print(f"schemathesis: {calls} requests, statuses by operation: {answered}")
    assert calls >= 150, calls
    # the generated cases reached the real work, not only the refusals: a painting and a listing answered 200
    assert 200 in answered["POST /api/filters/{name}/apply"] and 200 in answered["GET /api/filters"], answered
    assert set(answered) == {o.label for o in operations}
    assert all(code < 500 for codes in answered.values() for code in codes), answered


def _fuzz_operation(op, answered: dict) -> int:
    """Generated cases for one operation: valid by the document, invalid by it (wrong types, missing fields), and,
    for a filter's operations, valid ones naming the installed filter (so an apply really paints)."""
    from schemathesis import GenerationMode
    from schemathesis.checks import content_type_conformance, not_a_server_error, response_schema_conformance

    strategies = [op.as_strategy(GenerationMode.POSITIVE), op.as_strategy(GenerationMode.NEGATIVE)]
    if "{name}" in op.path:
        strategies.append(op.as_strategy(GenerationMode.POSITIVE, path_parameters={"name": "tiny"}))
    if op.label == "POST /api/filters/{name}/apply":  # a real picture, the other fields generated
        strategies.append(op.as_strategy(GenerationMode.POSITIVE, path_parameters={"name": "tiny"}).map(
            lambda case: _with_image(case, "image")))
    if op.label == "POST /api/jobs/train":  # a real artwork: the job is recorded (never run here)
        strategies.append(op.as_strategy(GenerationMode.POSITIVE).map(lambda case: _with_image(case, "artwork")))
    calls = []

    @settings(max_examples=20 if op.method.upper() == "GET" else 40, deadline=None, database=None,
              derandomize=True, suppress_health_check=list(HealthCheck))
    @given(case=st.one_of(strategies))
    def run(case):
        response = case.call()
        calls.append(response.status_code)
        answered.setdefault(op.label, set()).add(response.status_code)
        case.validate_response(response, checks=[not_a_server_error, response_schema_conformance,
                                                 content_type_conformance])

    run()
    return len(calls)


def _with_image(case, field: str):
    if isinstance(case.body, dict):
        case.body[field] = PNG
    return case


# ---------------------------------------------------------------- what the fuzz found, kept as plain cases


def test_a_png_with_a_truncated_header_chunk_is_one_line(world):
    """Pillow raises ValueError ("Truncated IHDR chunk") for it: was a traceback from `apply`."""
    bad = world.work / "short-ihdr.png"
    bad.write_bytes(PNG[:8] + struct.pack(">I", 12) + PNG[12:])  # IHDR says 12 bytes long, not 13
    world.refused("apply", "tiny", bad, "-o", world.work / "out.png", words=["short-ihdr.png", "cannot decode"],
                  absent=[world.work / "out.png"])


@pytest.mark.parametrize("arch, words", [
    ({"channels": [], "res_blocks": 1, "kernel_outer": 9}, "channels"),  # was torch's ValueError
    ({"channels": [8, 16, 16], "res_blocks": 10**9, "kernel_outer": 9}, "res_blocks"),  # was a hang
    ({"channels": [8, -16, 16], "res_blocks": 1, "kernel_outer": 9}, "channels"),
    ({"channels": [8, 16, 16], "res_blocks": 1, "kernel_outer": 4}, "kernel_outer"),
])
def test_a_filter_card_with_an_impossible_architecture_is_one_line(world, filter_bytes, arch, words):
    path = world.work / "hostile.safetensors"
    path.write_bytes(_with_card(filter_bytes, lambda card: {**card, "architecture": arch}))
    world.refused("apply", path, world.photo, "-o", world.work / "out.png", words=["corrupt card", words],
                  absent=[world.work / "out.png"])
