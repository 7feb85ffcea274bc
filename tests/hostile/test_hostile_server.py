"""The HTTP API given hostile requests and a hostile registry: the promised status, a one-line detail that names the
upload or the filter and never a server path, no 500, and the registry, outputs and jobs database unchanged."""

from __future__ import annotations

import io
import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from conftest import require_module

require_module("fastapi", 'pip install -e ".[test]"')
from fastapi.testclient import TestClient  # noqa: E402

from rotoscope.config import ServerConfig  # noqa: E402
from rotoscope.server import create_app  # noqa: E402

from .conftest import pickle_bytes, torch_zip_bytes  # noqa: E402

# a hang (a FIFO read, a lock) fails within 120 s rather than at the suite's 600 s
pytestmark = pytest.mark.timeout(120)


def png(size=(40, 32)) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def png_claiming(w, h) -> bytes:
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 10)) + chunk(b"IEND", b""))


@pytest.fixture
def client(world):
    with TestClient(create_app(ServerConfig(), run_jobs=False)) as c:
        db = world.home / "server" / "jobs.sqlite"
        assert db.is_file()
        yield c


def refused(world, r, status, *words):
    """The promised status, a one-line detail with the words, and no server path in the body."""
    assert r.status_code == status, (r.status_code, r.text)
    detail = r.json()["detail"]
    text = detail if isinstance(detail, str) else str(detail)
    assert "\n" not in text and "Traceback" not in text
    for w in words:
        assert w in text, (w, text)
    assert str(world.root) not in r.text and str(world.home) not in r.text, r.text
    world.check()


BAD_REGISTRY = {
    "cut": lambda w, p: p.write_bytes((w.filters / "tiny.safetensors").read_bytes()[:300]),
    "pickle": lambda w, p: p.write_bytes(pickle_bytes(w.marker)),
    "zipped": lambda w, p: p.write_bytes(torch_zip_bytes(w.marker)),
    "folder": lambda w, p: p.mkdir(),
    "fifo": lambda w, p: os.mkfifo(p),
    "passwd": lambda w, p: p.symlink_to("/etc/passwd"),
}


@pytest.mark.parametrize("kind", BAD_REGISTRY)
def test_a_bad_registry_entry_is_one_refusal_never_a_broken_server(world, client, kind):
    BAD_REGISTRY[kind](world, world.filters / f"{kind}.safetensors")
    assert client.get("/api/health").status_code == 200
    listed = {f["name"]: f["readable"] for f in client.get("/api/filters").json()}
    assert listed[kind] is False and listed["tiny"] is True and listed["keep"] is True
    for r in (client.get(f"/api/filters/{kind}"), client.get(f"/api/filters/{kind}/preview"),
              client.post(f"/api/filters/{kind}/apply", files={"image": ("p.png", png(), "image/png")})):
        refused(world, r, 422)
    r = client.post("/api/jobs/video", files={"video": ("v.mp4", b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 32)},
                    data={"filter": kind})
    refused(world, r, 422)  # refused when asked, not by a job that fails later
    if kind in ("folder", "fifo"):
        refused(world, client.delete(f"/api/filters/{kind}"), 403, "not a filter file")


UPLOADS = {
    "empty": (b"", 415, "image: not an image"),
    "text": (b"hello, I am a photo", 415, "image: not an image"),
    "truncated": (png()[:300], 422, "image: cannot decode"),
    "png then zip": (b"\x89PNG\r\n\x1a\n" + b"PK\x03\x04" + b"\x00" * 64, 415, "not an image"),
    "pickle": ("pickle", 415, "not an image"),
    "pixel bomb": (png_claiming(100_000, 100_000), 413, "limit"),
    "zero width": (png_claiming(0, 10), 415, "not an image"),
    "svg": (b'<svg xmlns="http://www.w3.org/2000/svg"><script>x</script></svg>', 415, "not an image"),
}


@pytest.mark.parametrize("case", UPLOADS)
def test_a_hostile_upload_gets_its_status_and_names_the_upload(world, client, case):
    data, status, words = UPLOADS[case]
    if data == "pickle":
        data = pickle_bytes(world.marker)
    r = client.post("/api/filters/tiny/apply", files={"image": ("holiday.png", data, "image/png")})
    refused(world, r, status, words)


BAD_FORMS = [({"strength": "nan"}, "strength"), ({"strength": "-1"}, "strength"), ({"size": "-1"}, "size"),
             ({"size": "99999"}, "size"), ({"size": "ten"}, "size"), ({"format": "gif"}, "format"),
             ({"preserve_colors": "perhaps"}, "preserve_colors")]


@pytest.mark.parametrize("form,words", BAD_FORMS, ids=[str(f) for f, _ in BAD_FORMS])
def test_bad_apply_settings_are_422(world, client, form, words):
    r = client.post("/api/filters/tiny/apply", files={"image": ("p.png", png(), "image/png")}, data=form)
    refused(world, r, 422, words)


@pytest.mark.parametrize("filename", ["../../../../tmp/escape.png", "/etc/passwd", "new\nline.png", "ü 'q\".png",
                                      "x" * 300 + ".png"])
def test_an_upload_name_is_never_a_path(world, client, filename):
    escape_existed = os.path.exists("/tmp/escape.png")
    r = client.post("/api/filters/tiny/apply", files={"image": (filename, png(), "image/png")})
    assert r.status_code == 200 and Image.open(io.BytesIO(r.content)).size == (40, 32)
    assert escape_existed or not os.path.exists("/tmp/escape.png")
    world.check()


@pytest.mark.parametrize("name", ["..%2F..%2Fetc%2Fpasswd", "a" * 65, "tiny%00", ".hidden", "%20"])
def test_filter_names_in_urls_stay_in_the_registry(world, client, name):
    r = client.post(f"/api/filters/{name}/apply", files={"image": ("p.png", png(), "image/png")})
    assert r.status_code in (404, 422), r.text
    assert str(world.home) not in r.text
    world.check()


TRAIN_FORMS = [
    ({"name": "new", "steps": "-5"}, None, 422, "steps must be between"),
    ({"name": "new", "steps": "0"}, None, 422, "steps must be between"),
    ({"name": "new", "batch": "0"}, None, 422, "batch must be between"),
    ({"name": "new", "set": "nonsense=1"}, None, 422, "unknown setting"),
    ({"name": "new", "channels": "1,2"}, None, 422, "channels"),
    ({"name": "../new"}, None, 422, "invalid filter name"),
    ({"name": "keep"}, None, 409, "pass overwrite=true"),
    ({"name": "new"}, "artwork", 415, "artwork: not an image"),
    ({"name": "new"}, "photo", 415, "photo junk.png: not an image"),
]


@pytest.mark.parametrize("form,bad,status,words", TRAIN_FORMS, ids=[f"{f}-{b}" for f, b, _, _ in TRAIN_FORMS])
def test_a_bad_training_job_is_refused_and_records_nothing(world, client, form, bad, status, words):
    files = [("artwork", ("art.png", b"junk" if bad == "artwork" else png(), "image/png"))]
    if bad == "photo":
        files.append(("photos", ("junk.png", b"junk", "image/png")))
    r = client.post("/api/jobs/train", files=files, data=form)
    refused(world, r, status, words)
    assert client.get("/api/jobs").json() == []


def test_bad_video_jobs_and_job_ids(world, client):
    refused(world, client.post("/api/jobs/video", files={"video": ("v.mp4", png())}, data={"filter": "tiny"}), 415,
            "video: not a video")
    refused(world, client.post("/api/jobs/video", files={"video": ("v.mp4", b"\x1a\x45\xdf\xa3webm")},
                               data={"filter": "tinyy"}), 404, "did you mean tiny")
    for path in ("/api/jobs/nope", "/api/jobs/nope/result", "/api/jobs/nope/preview"):
        refused(world, client.get(path), 404)
    refused(world, client.post("/api/jobs/nope/cancel"), 404)
    assert client.get("/api/jobs").json() == []


def test_a_folder_the_server_cannot_write_is_507_in_one_line(world, client, readonly_dir):
    """The previews folder on a read-only file system: the preview is refused, the server goes on."""
    previews = world.home / "server" / "previews"
    previews.symlink_to(readonly_dir, target_is_directory=True)
    r = client.get("/api/filters/tiny/preview")
    refused(world, r, 507, "cannot write", "Read-only file system" if os.geteuid() == 0 else "ermission")
    assert client.get("/api/health").status_code == 200
