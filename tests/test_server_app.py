"""The HTTP API: every endpoint, every limit, the token, and applies that do not block the event loop."""

import http.server
import io
import json
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from rotoscope.config import ServerConfig  # noqa: E402
from rotoscope.errors import RotoscopeError, TooLarge, Unsupported  # noqa: E402
from rotoscope.images import IMAGE_SUFFIXES  # noqa: E402
from rotoscope.server import app as app_module  # noqa: E402
from rotoscope.server import create_app  # noqa: E402
from rotoscope.server.routes import filters as filter_routes  # noqa: E402
from rotoscope.server.jobs import database_path  # noqa: E402
from rotoscope.server.uploads import (IMAGE_FORMATS, BodyLimit, save_upload, sniff_image, sniff_video,  # noqa: E402
                                      too_large_message)

TINY_TRAIN = {"steps": "5", "size": "32", "channels": "8,16,16", "res_blocks": "1", "backbone": "random"}


def png_bytes(size=(48, 40), seed=0, fmt="PNG", mode="RGB") -> bytes:
    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), "RGB").convert(mode)
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


@pytest.fixture
def client(tiny_filter, tmp_path, monkeypatch):
    """The API with the tiny filter installed (and none of the shipped ones); jobs are recorded, no worker starts."""
    import rotoscope.filter as filter_module

    monkeypatch.setattr(filter_module, "SHIPPED_DIR", tmp_path / "no-shipped-filters")
    with TestClient(create_app(ServerConfig(), run_jobs=False)) as c:
        yield c


def apply(client, data=None, image=None, name="tiny", filename="photo.png", ctype="image/png"):
    return client.post(f"/api/filters/{name}/apply", files={"image": (filename, image or png_bytes(), ctype)},
                       data=data or {})


# ---------------------------------------------------------------- health, studio, docs


def test_health_reports_version_filters_and_jobs(client):
    h = client.get("/api/health").json()
    assert h["status"] == "ok" and h["filters"] == 1 and h["jobs"] == {"queued": 0, "running": 0}
    assert h["url_apply"] is False and h["token_required"] is False


def test_studio_page_and_its_assets_are_served_with_no_external_urls(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    for asset in ("/static/studio.js", "/static/studio.css"):
        assert asset in page.text
        body = client.get(asset)
        assert body.status_code == 200
        assert "http://" not in body.text and "https://" not in body.text  # no CDN at run time
    assert "https://" not in page.text and "http://" not in page.text


def test_the_studios_training_form_shows_the_recipes_defaults_and_sends_none(client):
    """The form shows the settings table's defaults as placeholders (not values of its own, which would train
    studio users a weaker filter than `rotoscope train`); an empty field is not sent, so the server's apply."""
    import re

    from rotoscope.config import TrainConfig

    page = client.get("/").text
    form = page[page.index('id="train-form"'):page.index("</form>", page.index('id="train-form"'))]
    d = TrainConfig()
    for field, shown in (("steps", d.steps), ("size", d.size), ("channels", ",".join(map(str, d.net.channels)))):
        tag = re.search(rf'<input name="{field}"[^>]*>', form).group(0)
        assert f'placeholder="{shown} (default)"' in tag and "value=" not in tag, tag
    assert "{{" not in page


def test_openapi_documents_every_endpoint(client):
    paths = client.get("/openapi.json").json()["paths"]
    for p in ("/api/health", "/api/filters", "/api/filters/{name}", "/api/filters/{name}/preview",
              "/api/filters/{name}/apply", "/api/filters/{name}/apply-url", "/api/jobs", "/api/jobs/train",
              "/api/jobs/video", "/api/jobs/{job_id}", "/api/jobs/{job_id}/cancel", "/api/jobs/{job_id}/events",
              "/api/jobs/{job_id}/preview", "/api/jobs/{job_id}/result"):
        assert p in paths, p
    assert client.get("/docs").status_code == 200


# ---------------------------------------------------------------- filters


def test_filters_list_and_card(client):
    [f] = client.get("/api/filters").json()
    assert f["name"] == "tiny" and f["artwork"] == "Tiny test artwork" and f["shipped"] is False
    card = client.get("/api/filters/tiny").json()["card"]
    assert card["architecture"]["channels"] == [8, 16, 16]


def test_unknown_filter_is_404_with_a_suggestion(client):
    r = client.get("/api/filters/tinny")
    assert r.status_code == 404 and "did you mean tiny" in r.json()["detail"]
    assert apply(client, name="nope").status_code == 404


@pytest.mark.parametrize("name", ["..", ".hidden", "a b", "x" * 65, "..%2F..%2Fetc%2Fpasswd"])
def test_invalid_filter_names_are_refused(client, name):
    r = client.get(f"/api/filters/{name}")
    assert r.status_code in (404, 422)
    assert apply(client, name=name).status_code in (404, 405, 422)


def test_a_filter_is_named_never_read_from_a_path(client, tiny_filter, tmp_path, monkeypatch):
    # a filter file in the server's working directory must not be reachable by naming it
    monkeypatch.chdir(tmp_path)
    (tmp_path / "evil.safetensors").write_bytes(tiny_filter.read_bytes())
    assert client.get("/api/filters/evil.safetensors").status_code == 404
    assert apply(client, name="evil.safetensors").status_code == 404


def test_filter_preview_is_a_cached_png(client, rotoscope_home):
    r = client.get("/api/filters/tiny/preview")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert max(Image.open(io.BytesIO(r.content)).size) == 256
    assert len(list((rotoscope_home / "server" / "previews").glob("tiny-*.png"))) == 1


def test_delete_filter(client, rotoscope_home):
    assert client.delete("/api/filters/tiny").json() == {"deleted": "tiny"}  # no path on the server
    assert not (rotoscope_home / "filters" / "tiny.safetensors").exists()
    assert client.delete("/api/filters/tiny").status_code == 404
    assert client.get("/api/filters").json() == []


def test_shipped_filters_cannot_be_deleted(client, tiny_filter, tmp_path, monkeypatch):
    import rotoscope.filter as filter_module

    shipped = tmp_path / "shipped"
    shipped.mkdir()
    (shipped / "classic.safetensors").write_bytes(tiny_filter.read_bytes())
    monkeypatch.setattr(filter_module, "SHIPPED_DIR", shipped)
    r = client.delete("/api/filters/classic")
    assert r.status_code == 403 and "ships with rotoscope" in r.json()["detail"]


def test_a_training_job_may_not_take_a_shipped_filters_name_unless_told(client, tiny_filter, tmp_path, monkeypatch):
    """The rule of train, train-many and mix: a user filter of a shipped name would hide the shipped one."""
    import rotoscope.filter as filter_module

    shipped = tmp_path / "shipped"
    shipped.mkdir()
    (shipped / "classic.safetensors").write_bytes(tiny_filter.read_bytes())
    monkeypatch.setattr(filter_module, "SHIPPED_DIR", shipped)
    r = start_train(client, name="classic")
    assert r.status_code == 409 and r.json()["detail"].startswith(
        "a filter named 'classic' ships with rotoscope; pass overwrite=true to put yours in its place"), r.text
    assert str(tmp_path) not in r.text
    assert start_train(client, name="classic", overwrite="true").status_code == 202


# ---------------------------------------------------------------- apply


def test_apply_returns_the_painted_image_with_provenance(client):
    r = apply(client)
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    out = Image.open(io.BytesIO(r.content))
    assert out.size == (48, 40) and r.headers["x-rotoscope-filter"] == "tiny"
    prov = json.loads(out.info["rotoscope"])
    assert prov["filter"] == "tiny" and prov["source"] == "photo.png" and prov["settings"]["strength"] == 1.0
    photo = np.asarray(Image.open(io.BytesIO(png_bytes())), dtype=np.int16)
    assert np.abs(np.asarray(out, dtype=np.int16) - photo).mean() > 5  # it was painted, not echoed


def test_apply_says_how_far_the_picture_lies_from_the_filters_training_photos_as_the_cli_does(client, tmp_path):
    """The network has no confidence signal, only that distance: the studio shows it beside the painting."""
    import shutil

    import rotoscope
    from rotoscope.apply import assess
    from rotoscope.filter import load_filter_file
    from rotoscope.paths import filters_dir

    shipped = Path(rotoscope.__file__).parent / "filters" / "great-wave-lite.safetensors"  # one with statistics
    shutil.copy(shipped, filters_dir() / "wave.safetensors")
    r = apply(client, name="wave", data={"size": "32"})
    assert r.status_code == 200, r.text
    want = assess(load_filter_file(shipped), Image.open(io.BytesIO(png_bytes())), "photo.png")
    assert float(r.headers["x-rotoscope-distance"]) == want["distance"]
    assert float(r.headers["x-rotoscope-threshold"]) == want["threshold"]
    assert r.headers["x-rotoscope-in-distribution"] == str(want["in_distribution"]).lower()
    page = Image.new("RGB", (64, 48), (250, 250, 250))  # a white page: brighter than any of its training photos
    buf = io.BytesIO()
    page.save(buf, "PNG")
    r = client.post("/api/filters/wave/apply", files={"image": ("page.png", buf.getvalue(), "image/png")})
    assert r.status_code == 200 and r.headers["x-rotoscope-in-distribution"] == "false"
    assert r.headers["x-rotoscope-outside"].startswith("bright_share 1 outside 0-"), r.headers
    assert "x-rotoscope-distance" not in apply(client).headers  # the tiny filter's card has no training statistics


def test_apply_settings_strength_preserve_colours_size_and_format(client):
    photo = np.asarray(Image.open(io.BytesIO(png_bytes())), dtype=np.int16)
    zero = np.asarray(Image.open(io.BytesIO(apply(client, {"strength": "0"}).content)), dtype=np.int16)
    assert np.abs(zero - photo).max() <= 1  # strength 0 is the photo
    full = np.asarray(Image.open(io.BytesIO(apply(client).content)), dtype=np.int16)
    kept = np.asarray(Image.open(io.BytesIO(apply(client, {"preserve_colors": "true"}).content)), dtype=np.int16)
    assert np.abs(kept - full).mean() > 1  # preserving colours changes the result
    small = apply(client, {"size": "24"})
    assert Image.open(io.BytesIO(small.content)).size == (24, 20)
    jpeg = apply(client, {"format": "jpeg"})
    assert jpeg.headers["content-type"] == "image/jpeg" and Image.open(io.BytesIO(jpeg.content)).format == "JPEG"
    # paint_scale, as `apply --paint-scale` does: painted smaller, the photo's edges restored; in the provenance
    half = apply(client, {"paint_scale": "0.5"})
    assert half.status_code == 200, half.text
    scaled = np.asarray(Image.open(io.BytesIO(half.content)), dtype=np.int16)
    assert scaled.shape == full.shape and np.abs(scaled - full).mean() > 1
    assert json.loads(Image.open(io.BytesIO(half.content)).info["rotoscope"])["settings"]["paint_scale"] == 0.5


@pytest.mark.parametrize("data, words", [({"strength": "1.5"}, "strength"), ({"size": "8"}, "size"),
                                         ({"size": "100000"}, "size"), ({"format": "gif"}, "format"),
                                         ({"paint_scale": "0.01"}, "paint_scale must be between 0.1 and 1")])
def test_apply_refuses_bad_settings_with_422(client, data, words):
    r = apply(client, data)
    assert r.status_code == 422 and words in json.dumps(r.json())


def test_apply_sniffs_the_content_not_the_name(client):
    # an image sent under a text name and type is still an image
    assert apply(client, filename="notes.txt", ctype="text/plain").status_code == 200
    # text sent as a PNG is refused
    r = apply(client, image=b"hello, I am not a picture" * 10, filename="photo.png")
    assert r.status_code == 415 and "not an image" in r.json()["detail"]


def test_apply_refuses_a_truncated_image_with_422(client):
    r = apply(client, image=png_bytes((64, 64))[:200])
    assert r.status_code == 422 and "cannot decode" in r.json()["detail"]


def test_errors_name_the_upload_never_a_server_temporary_path(client, tiny_filter):
    import tempfile

    r = apply(client, image=png_bytes((64, 64))[:200], filename="holiday.png")
    detail = r.json()["detail"]
    assert r.status_code == 422 and detail.startswith("image: cannot decode image")
    assert tempfile.gettempdir() not in detail and "rotoscope-" not in detail and "in.png" not in detail
    # the same for the other ways an upload fails: not an image, too many pixels
    r = apply(client, image=b"hello, I am not a picture" * 10)
    assert r.status_code == 415 and r.json()["detail"].startswith("image: not an image")
    with TestClient(create_app(ServerConfig(max_pixels=1000), run_jobs=False)) as c:
        r = apply(c)
        assert r.status_code == 413 and r.json()["detail"].startswith("image: image is 48x40")


def test_upload_size_limit_is_413(tiny_filter):
    with TestClient(create_app(ServerConfig(max_upload_bytes=4000), run_jobs=False)) as c:
        r = apply(c, image=png_bytes((64, 64)))  # ~12 kB of noise
        assert r.status_code == 413 and "limit" in r.json()["detail"]

        def chunks():  # no Content-Length: the limit is enforced while the body streams in
            yield b"x" * 3000
            yield b"x" * 3000

        r = c.post("/api/filters/tiny/apply", content=chunks(), headers={"content-type": "multipart/form-data; "
                                                                                         "boundary=zzz"})
        assert r.status_code == 413


def test_pixel_limit_is_413_before_decoding(tiny_filter):
    with TestClient(create_app(ServerConfig(max_pixels=1000), run_jobs=False)) as c:
        r = apply(c, image=png_bytes((48, 40)))
        assert r.status_code == 413 and "1,920 pixels" in r.json()["detail"]


def test_apply_does_not_block_the_event_loop(client, monkeypatch):
    started, release = threading.Event(), threading.Event()
    real = filter_routes.stylize_image

    def slow(*a, **k):
        started.set()
        release.wait(30)
        return real(*a, **k)

    monkeypatch.setattr(filter_routes, "stylize_image", slow)
    result = {}
    t = threading.Thread(target=lambda: result.update(r=apply(client)))
    t.start()
    assert started.wait(30)
    # while an apply is being painted, the server still answers
    t0 = time.perf_counter()
    assert client.get("/api/health").status_code == 200
    assert client.get("/api/filters").status_code == 200
    assert time.perf_counter() - t0 < 10 and t.is_alive()
    release.set()
    t.join(30)
    assert result["r"].status_code == 200


class FakeRequest:
    def __init__(self, gone):
        self.gone = gone

    async def is_disconnected(self):
        return self.gone


def test_a_paint_whose_client_has_gone_is_dropped_while_it_waits_for_a_thread():
    """The studio aborts a paint that a newer one supersedes: queued behind busy threads, it is never painted."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    pool, release, painted = ThreadPoolExecutor(1), threading.Event(), []
    pool.submit(release.wait, 30)  # the pool's one thread is busy

    def work(*args):
        painted.append(args)
        return b"painted", {}

    try:
        r = asyncio.run(filter_routes.respond(FakeRequest(gone=True), pool, work, "f", None, None, "png"))
        assert r.status_code == 499
        release.set()  # the thread is free: the hung-up paint, dropped, must not run now either
        r = asyncio.run(filter_routes.respond(FakeRequest(gone=False), pool, work, "f", None, None, "png"))
        assert r.status_code == 200 and r.body == b"painted"
    finally:
        release.set()
        pool.shutdown(wait=True)
    assert len(painted) == 1  # only the paint somebody waited for


# ---------------------------------------------------------------- apply by URL


def test_apply_by_url_is_off_by_default(client):
    r = client.post("/api/filters/tiny/apply-url", json={"url": "http://127.0.0.1:1/x.png"})
    assert r.status_code == 403 and "--allow-url" in r.json()["detail"]


@pytest.fixture
def image_server(tmp_path):
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "photo.png").write_bytes(png_bytes())

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **k):
            super().__init__(*a, directory=str(tmp_path / "www"), **k)

        def log_message(self, *a):
            pass

        def do_GET(self):  # /redir?to=URL answers 302 to URL
            if self.path.startswith("/redir?to="):
                self.send_response(302)
                self.send_header("Location", self.path.split("=", 1)[1])
                self.end_headers()
                return
            super().do_GET()

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


def test_apply_by_url_when_enabled(tiny_filter, image_server):
    with TestClient(create_app(ServerConfig(allow_url=True), run_jobs=False)) as c:
        r = c.post("/api/filters/tiny/apply-url", json={"url": f"{image_server}/photo.png", "size": 24})
        assert r.status_code == 200 and Image.open(io.BytesIO(r.content)).size == (24, 20)
        assert c.post("/api/filters/tiny/apply-url", json={"url": "file:///etc/passwd"}).status_code == 422
        assert c.post("/api/filters/tiny/apply-url", json={"url": f"{image_server}/missing.png"}).status_code == 422
    with TestClient(create_app(ServerConfig(allow_url=True, max_upload_bytes=1000), run_jobs=False)) as c:
        assert c.post("/api/filters/tiny/apply-url", json={"url": f"{image_server}/photo.png"}).status_code == 413


@pytest.mark.parametrize("url", ["http://[::1", "http://exa mple.com/x.png", "http://127.0.0.1:abc/x.png",
                                 f"http://{'a' * 70}.example/x.png", "http://127.0.0.1/x\r\n.png", "http://",
                                 "https:///x.png"])
def test_a_malformed_url_is_refused_in_json_not_a_bare_500(tiny_filter, url):
    with TestClient(create_app(ServerConfig(allow_url=True), run_jobs=False), raise_server_exceptions=False) as c:
        r = c.post("/api/filters/tiny/apply-url", json={"url": url})
        assert r.status_code == 422 and r.headers["content-type"].startswith("application/json"), r.text
        assert r.json()["detail"]


def test_a_url_is_fetched_through_http_redirects_only(tiny_filter, image_server):
    """urllib follows a redirect to ftp:// by itself: only http(s) ones are."""
    with TestClient(create_app(ServerConfig(allow_url=True), run_jobs=False)) as c:
        good = c.post("/api/filters/tiny/apply-url",
                      json={"url": f"{image_server}/redir?to={image_server}/photo.png"})
        assert good.status_code == 200, good.text
        for target, says in (("ftp://127.0.0.1/photo.png", "redirects to something other than http"),
                             ("file:///etc/passwd", "is not allowed")):  # urllib's own refusal
            r = c.post("/api/filters/tiny/apply-url", json={"url": f"{image_server}/redir?to={target}"})
            assert r.status_code == 422 and says in r.json()["detail"], r.text


# ---------------------------------------------------------------- token


def test_token_is_required_when_set(tiny_filter):
    with TestClient(create_app(ServerConfig(token="s3cret"), run_jobs=False)) as c:
        assert c.get("/api/health").status_code == 200  # monitors need no token
        r = c.get("/api/filters")
        assert r.status_code == 401 and "token" in r.json()["detail"]
        wrong = c.get("/api/filters", headers={"Authorization": "Bearer wrong"})
        assert wrong.status_code == 401 and wrong.json()["detail"] == "wrong API token"  # not "needs a token"
        assert c.get("/api/filters", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert c.get("/api/filters?token=s3cret").status_code == 200
        assert c.post("/api/filters/tiny/apply", files={"image": ("p.png", png_bytes(), "image/png")}).status_code == 401


def test_binding_beyond_localhost_needs_a_token():
    assert not app_module.needs_token("127.0.0.1") and not app_module.needs_token("localhost")
    assert app_module.needs_token("0.0.0.0") and app_module.needs_token("192.168.1.5")
    with pytest.raises(RotoscopeError, match="token"):
        app_module.serve(ServerConfig(host="0.0.0.0"))


def test_serve_cli_refuses_a_public_bind_without_token(capsys, monkeypatch):
    import sys

    from rotoscope import cli

    monkeypatch.delenv("ROTOSCOPE_TOKEN", raising=False)
    monkeypatch.setattr(sys, "argv", ["rotoscope", "serve", "--host", "0.0.0.0"])
    with pytest.raises(SystemExit) as e:
        cli.main()
    err = capsys.readouterr().err
    assert e.value.code == 1 and err.startswith("error: binding to 0.0.0.0") and "Traceback" not in err


@pytest.mark.parametrize("args, words", [
    (["--max-upload-mb", "0"], "--max-upload-mb must be between 0.001 and 1048576 MiB (got 0)"),  # not "unset"
    (["--max-video-mb", "-1"], "--max-video-mb must be between 0.001"),  # in the MiB typed, not in bytes
    (["--port", "0"], "port must be between 1 and 65535"),  # any free port: the address it says would be wrong
    (["--token", "short"], "token must be 8 characters or more, with no spaces"),
])
def test_serve_refuses_bad_limits_in_the_words_and_units_typed(args, words, capsys, monkeypatch):
    from conftest import assert_one_line_error, require_module, rotoscope

    uvicorn = require_module("uvicorn", "pip install -e '.[server]'")
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: pytest.fail("the server started"))
    assert_one_line_error(*rotoscope("serve", *args, capsys=capsys), words)


def test_database_setting_accepts_paths_and_sqlite_urls(tmp_path):
    assert database_path(str(tmp_path / "j.db")) == tmp_path / "j.db"
    assert database_path(f"sqlite:///{tmp_path}/j.db") == tmp_path / "j.db"
    assert database_path("sqlite:///rel.db") == Path("rel.db")
    with pytest.raises(RotoscopeError, match="only SQLite"):
        database_path("postgresql://db/jobs")


def test_database_setting_is_used(tiny_filter, tmp_path):
    db = tmp_path / "elsewhere" / "jobs.db"
    with TestClient(create_app(ServerConfig(database=f"sqlite:///{db}"), run_jobs=False)) as c:
        c.post("/api/jobs/train", files={"artwork": ("a.png", png_bytes(), "image/png")},
               data={"name": "x", **TINY_TRAIN})
    assert db.exists()


# ---------------------------------------------------------------- jobs (recorded here; run in test_server_jobs.py)


def start_train(client, name="fresh", artwork=None, **data):
    return client.post("/api/jobs/train", files={"artwork": ("art.png", artwork or png_bytes(seed=3), "image/png")},
                       data={"name": name, **TINY_TRAIN, **data})


def test_train_job_is_recorded_with_its_inputs(client):
    r = start_train(client, title="My art")
    assert r.status_code == 202
    job = r.json()
    assert job["status"] == "queued" and job["kind"] == "train" and job["total"] == 5
    assert job["params"]["config"]["net"]["channels"] == [8, 16, 16] and job["params"]["title"] == "My art"
    got = client.get(f"/api/jobs/{job['id']}").json()
    assert got["id"] == job["id"] and got["history"] == []
    assert [j["id"] for j in client.get("/api/jobs").json()] == [job["id"]]
    assert client.get("/api/jobs?status=done").json() == []
    assert job["params"]["config"]["net"]["arch"] == "full"  # the default network unless asked


def test_a_train_job_can_ask_for_the_lite_network(client):
    r = start_train(client, name="litejob", arch="lite")
    assert r.status_code == 202 and r.json()["params"]["config"]["net"]["arch"] == "lite"
    assert start_train(client, name="badarch", arch="tiny").status_code == 422


def test_train_job_with_photos(client, rotoscope_home):
    r = client.post("/api/jobs/train", data={"name": "withphotos", **TINY_TRAIN},
                    files=[("artwork", ("art.png", png_bytes(seed=3), "image/png")),
                           ("photos", ("a.jpg", png_bytes(seed=4, fmt="JPEG"), "image/jpeg")),
                           ("photos", ("b.png", png_bytes(seed=5), "image/png"))])
    assert r.status_code == 202 and r.json()["params"]["photos"] == 2
    folder = rotoscope_home / "server" / "jobs" / r.json()["id"]
    assert sorted(p.name for p in (folder / "photos").iterdir()) == ["0000.jpg", "0001.png"]


@pytest.mark.parametrize("data, status, words", [
    ({"name": "bad name"}, 422, "invalid filter name"), ({"steps": "0"}, 422, "steps"),
    ({"steps": "999999"}, 422, "steps"), ({"backbone": "resnet"}, 422, "unknown backbone"),
    ({"channels": "8,16"}, 422, "channels"), ({"size": "4"}, 422, "size"), ({"name": "tiny"}, 409, "exists"),
])
def test_train_job_refuses_bad_requests(client, data, status, words):
    r = start_train(client, **data)
    assert r.status_code == status and words in r.json()["detail"]


def test_train_job_refuses_an_artwork_that_is_not_an_image(client):
    r = start_train(client, artwork=b"GIF89a but not really")
    assert r.status_code == 415 and "artwork" in r.json()["detail"]


def test_train_job_overwrite_and_duplicate_active_name(client):
    assert start_train(client, name="tiny", overwrite="true").status_code == 202
    r = start_train(client, name="tiny", overwrite="true")
    assert r.status_code == 409 and "already training" in r.json()["detail"]


def test_job_endpoints_before_a_job_has_run(client):
    job = start_train(client).json()
    assert client.get(f"/api/jobs/{job['id']}/preview").status_code == 404
    r = client.get(f"/api/jobs/{job['id']}/result")
    assert r.status_code == 409 and "queued" in r.json()["detail"]
    assert client.get("/api/jobs/000000000000").status_code == 404
    assert client.get("/api/jobs/..%2Fjobs.sqlite").status_code == 404


def test_cancel_a_queued_job(client):
    job = start_train(client).json()
    r = client.post(f"/api/jobs/{job['id']}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert client.post(f"/api/jobs/{job['id']}/cancel").status_code == 409
    assert client.get(f"/api/jobs/{job['id']}/result").status_code == 409
    # a finished job's event stream sends its state once and ends
    with client.stream("GET", f"/api/jobs/{job['id']}/events") as s:
        events = [json.loads(line[5:]) for line in s.iter_lines() if line.startswith("data:")]
    assert [e["status"] for e in events] == ["cancelled"]


def test_video_job_is_recorded_and_sniffed(client, tmp_path):
    mp4 = b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2avc1mp41" + b"\x00" * 64
    r = client.post("/api/jobs/video", files={"video": ("clip.mp4", mp4, "video/mp4")}, data={"filter": "tiny"})
    assert r.status_code == 202 and r.json()["kind"] == "video" and r.json()["name"] == "tiny"
    r = client.post("/api/jobs/video", files={"video": ("clip.mp4", png_bytes(), "video/mp4")},
                    data={"filter": "tiny"})
    assert r.status_code == 415 and "not a video" in r.json()["detail"]
    r = client.post("/api/jobs/video", files={"video": ("clip.mp4", mp4, "video/mp4")}, data={"filter": "nope"})
    assert r.status_code == 404
    r = client.post("/api/jobs/video", files={"video": ("clip.mp4", mp4, "video/mp4")},
                    data={"filter": "tiny", "strength": "2"})
    assert r.status_code == 422


def test_video_upload_limit_is_413(tiny_filter):
    with TestClient(create_app(ServerConfig(max_video_bytes=1000), run_jobs=False)) as c:
        mp4 = b"\x00\x00\x00\x20ftypisom" + b"\x00" * 5000
        r = c.post("/api/jobs/video", files={"video": ("clip.mp4", mp4, "video/mp4")}, data={"filter": "tiny"})
        assert r.status_code == 413


# ---------------------------------------------------------------- uploads: what the server accepts, unit by unit


@pytest.mark.parametrize("fmt", IMAGE_FORMATS)
def test_an_accepted_image_is_saved_under_a_suffix_of_its_own_format(fmt):
    """The suffix an upload is saved under comes from its bytes, is one Pillow writes that format under, and one the
    photo folder reader lists (a training job's photos are read back from their folder)."""
    f = io.BytesIO(png_bytes((30, 20), fmt=fmt))
    f.seek(5)
    suffix, size = sniff_image(f, 600)
    assert size == (30, 20)
    assert Image.registered_extensions()[suffix] == fmt and suffix in IMAGE_SUFFIXES
    assert f.tell() == 0  # left at the start, for the copy that follows


def test_an_image_of_exactly_the_pixel_limit_is_accepted_one_pixel_more_is_not():
    assert sniff_image(io.BytesIO(png_bytes((30, 20))), 600)[1] == (30, 20)
    with pytest.raises(TooLarge, match="30x20 = 600 pixels; the limit is 599"):
        sniff_image(io.BytesIO(png_bytes((30, 20))), 599, "photo")
    # Pillow's own bomb check (twice its limit, from the header) is a TooLarge too, not "not an image"
    huge = io.BytesIO()
    Image.new("1", (1, 1)).save(huge, "PNG")
    data = bytearray(huge.getvalue())
    data[16:24] = (200_000).to_bytes(4, "big") * 2  # IHDR width and height: 4e10 pixels
    import zlib
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")
    with pytest.raises(TooLarge, match="^photo: image has more pixels than the 599-pixel limit"):
        sniff_image(io.BytesIO(bytes(data)), 599, "photo")


def test_an_image_pillow_reads_but_the_server_does_not_accept_is_unsupported():
    f = io.BytesIO()
    Image.new("RGB", (8, 8)).save(f, "PPM")
    with pytest.raises(Unsupported, match="^art: PPM images are not accepted") as e:
        sniff_image(f, 10**6, "art")
    assert all(name in str(e.value) for name in IMAGE_FORMATS)  # says what is
    assert f.tell() == 0
    with pytest.raises(Unsupported, match="^art: not an image"):
        sniff_image(io.BytesIO(b"GIF89a but no more"), 10**6, "art")


MP4 = b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2avc1mp41" + b"\x00" * 64
VIDEOS = {
    ".mp4": MP4,
    ".mov": b"\x00\x00\x00\x14ftypqt  \x20\x05\x03\x00qt  " + b"\x00" * 40,
    ".webm": b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\xf7\x81\x01\x42\x82\x84webm" + b"\x00" * 20,
    ".mkv": b"\x1a\x45\xdf\xa3\xa3\x42\x86\x81\x01\x42\xf7\x81\x01\x42\x82\x88matroska" + b"\x00" * 20,
    ".avi": b"RIFF\x00\x10\x00\x00AVI LIST" + b"\x00" * 40,
}


@pytest.mark.parametrize("suffix", VIDEOS)
def test_a_video_container_is_known_by_its_signature(suffix):
    f = io.BytesIO(VIDEOS[suffix])
    f.seek(7)
    assert sniff_video(f) == suffix
    assert f.tell() == 0


def test_a_matroska_file_is_webm_only_by_its_header():
    """WebM is told from Matroska by the document type in the first bytes, not by the word anywhere in the file
    (a title, a tag or the pictures themselves can contain it)."""
    mkv = VIDEOS[".mkv"]
    assert len(mkv) < 61
    later = mkv + b"\x00" * (61 - len(mkv)) + b"webm" + b"\x00" * 100  # "webm" from byte 61 on: past the header
    assert sniff_video(io.BytesIO(later)) == ".mkv"


@pytest.mark.parametrize("head", [b"", b"\x00\x00\x00\x08ftyp", b"RIFF\x00\x10\x00\x00WAVEfmt " + b"\x00" * 20,
                                  b"\x00\x00\x00\x20moovisom" + b"\x00" * 20, png_bytes()],
                         ids=["empty", "ftyp-cut-short", "wav", "no-ftyp", "png"])
def test_what_is_not_a_known_container_is_unsupported(head):
    f = io.BytesIO(head)
    with pytest.raises(Unsupported, match="^clip: not a video"):
        sniff_video(f, "clip")
    assert f.tell() == 0


def test_save_upload_copies_the_whole_upload_and_leaves_no_partial(tmp_path):
    payload = bytes(range(256)) * 9000  # over one 1 MiB chunk... and a bit: 2.2 MiB
    f = io.BytesIO(payload)
    f.read()  # already read to the end (sniffed, or spooled)
    dest = tmp_path / "job" / "in.png"
    assert save_upload(f, dest) == dest and dest.read_bytes() == payload
    assert os.listdir(dest.parent) == ["in.png"]

    class Broken(io.BytesIO):
        def read(self, *a):
            raise OSError(5, "Input/output error")

    with pytest.raises(RotoscopeError):
        save_upload(Broken(b"new"), dest)
    assert dest.read_bytes() == payload and os.listdir(dest.parent) == ["in.png"]  # the earlier file is intact


def body_limited(limit_for):
    """BodyLimit around an app that answers the length of the body it read (and records that it was called)."""
    from fastapi import FastAPI, Request

    inner, calls = FastAPI(), []

    @inner.post("/{path}")
    async def echo(request: Request):
        calls.append(request.url.path)
        return {"read": len(await request.body())}

    @inner.get("/{path}")
    async def get(request: Request):
        return {"read": len(await request.body())}

    return TestClient(BodyLimit(inner, limit_for)), calls


def test_a_body_of_exactly_the_limit_is_accepted_one_byte_more_is_413():
    c, calls = body_limited(lambda path: 10 if path == "/small" else 1000)
    assert c.post("/small", content=b"x" * 10).json() == {"read": 10}
    r = c.post("/small", content=b"x" * 11)
    assert r.status_code == 413 and r.json() == {"detail": too_large_message(10)}
    assert calls == ["/small"]  # refused from its Content-Length: the app never saw the second request
    assert r.headers["connection"] == "close"  # the unread body must not be taken for the next request
    assert int(r.headers["content-length"]) == len(r.content) and r.headers["content-type"] == "application/json"
    assert c.post("/large", content=b"x" * 11).json() == {"read": 11}  # each route its own limit

    def chunks(n):  # no Content-Length: counted while it streams in
        yield b"x" * (n - 4)
        yield b"x" * 4

    assert c.post("/small", content=chunks(10)).json() == {"read": 10}
    r = c.post("/small", content=chunks(11))
    assert r.status_code == 413 and r.json() == {"detail": too_large_message(10)}


def test_a_streamed_body_is_counted_across_its_chunks():
    """The limit is on the whole body, however it is cut: driven as ASGI by hand, since the test client hands the
    app a body in one piece."""
    import asyncio

    from fastapi import HTTPException

    def drive(chunks, limit):
        messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
        read = []

        async def receive():
            return messages.pop(0)

        async def app(scope, receive, send):
            while True:
                msg = await receive()
                read.append(msg["body"])
                if not msg["more_body"]:
                    return

        async def send(msg):
            raise AssertionError("nothing is answered by the middleware once the app runs")

        scope = {"type": "http", "method": "POST", "path": "/x", "headers": []}
        asyncio.run(BodyLimit(app, lambda path: limit)(scope, receive, send))
        return b"".join(read)

    assert drive([b"x" * 6, b"x" * 4], 10) == b"x" * 10
    with pytest.raises(HTTPException) as e:
        drive([b"x" * 6, b"x" * 5], 10)  # no chunk over the limit, the two together are
    assert e.value.status_code == 413 and e.value.detail == too_large_message(10)


def test_a_content_length_that_lies_is_caught_while_the_body_streams():
    c, _ = body_limited(lambda path: 10)

    def chunks():
        yield b"x" * 8
        yield b"x" * 8

    r = c.post("/small", content=chunks(), headers={"content-length": "8"})
    assert r.status_code == 413


def test_reads_have_no_body_limit():
    c, _ = body_limited(lambda path: 0)
    assert c.get("/anything").status_code == 200
    assert c.post("/anything", content=b"").status_code == 200  # an empty body is within any limit


def test_the_size_limit_is_said_in_mebibytes():
    assert "3.0 MiB" in too_large_message(3 * 2**20) and "0.5 MiB" in too_large_message(2**19)
