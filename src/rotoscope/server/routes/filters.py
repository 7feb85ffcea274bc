"""Filters: the registry (list, card, delete, preview) and applying a filter to an uploaded image or a URL.

Applies run in the bounded apply pool (PyTorch releases the GIL), so the event loop keeps answering while
pictures are painted.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import http.client
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Literal

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import FileResponse, Response
from pydantic import BaseModel

from ...config import KEEPS
from ...errors import Invalid, Refused, RotoscopeError, TooLarge
from ...filter import SHIPPED_DIR, check_name, list_filters, read_card, remove_filter
from ...images import open_image, save_image
from ...stylize import ApplySettings, provenance, resolve_for, stylize_image
from ..deps import PoolDep, SettingsDep, apply_settings, registry_file, load_cached, off_loop
from ..jobs import server_dir
from ..uploads import sniff_image, save_upload

OUTPUT_TYPES = {"png": ("image/png", ".png"), "jpeg": ("image/jpeg", ".jpg"), "webp": ("image/webp", ".webp")}
PREVIEW_SIZE = 256

router = APIRouter()


@functools.lru_cache(maxsize=1)
def _sample_photo():
    from ...data import sample_photos

    return next(p.image for p in sample_photos() if p.name == "chelsea")


# ---------------------------------------------------------------- the registry


def filter_summary(name: str, path: Path, card: dict | None) -> dict:
    card = card or {}
    hist = card.get("history") or {}
    return {"name": name, "shipped": path.parent == SHIPPED_DIR, "readable": bool(card),
            "artwork": (card.get("artwork") or {}).get("title"), "backbone": (card.get("backbone") or {}).get("name"),
            "steps": (card.get("timings") or {}).get("steps"), "size": (card.get("training") or {}).get("size"),
            "created": card.get("created"), "holdout_last": hist.get("holdout_last"),
            "train_last": hist.get("train_last"), "preview_url": f"/api/filters/{name}/preview"}


@router.get("/filters", tags=["filters"])
def filters():
    """Every filter in the registry with a summary of its card."""
    return [filter_summary(n, p, c) for n, p, c in list_filters()]


@router.get("/filters/{name}", tags=["filters"])
def filter_card(name: str):
    """A filter's full card: what it is and how it was made."""
    path = registry_file(check_name(name))
    return {"name": name, "card": read_card(path)}


@router.delete("/filters/{name}", tags=["filters"])
def delete_filter(name: str):
    """Remove a filter from the registry (shipped filters cannot be removed)."""
    remove_filter(name)
    return {"deleted": name}  # the name the request gave: never a path on the server


@router.get("/filters/{name}/preview", tags=["filters"], response_class=Response,
            responses={200: {"content": {"image/png": {}}}})
async def filter_preview(name: str, pool: PoolDep):
    """The filter applied to a sample photo (made once per version of the filter, then cached)."""
    def work():
        filt = load_cached(name)
        dest = server_dir() / "previews" / f"{filt.name}-{filt.card_hash}.png"
        if not dest.exists():
            photo = _sample_photo()
            settings = resolve_for(filt, ApplySettings(size=PREVIEW_SIZE), photo)
            save_image(stylize_image(filt, photo, settings), dest, provenance(filt, settings, "sample photo"))
        return dest

    dest = await off_loop(pool, work)
    return FileResponse(dest, media_type="image/png")


# ---------------------------------------------------------------- apply


class UrlApply(BaseModel):
    url: str
    strength: float = 1.0
    preserve_colors: bool = False
    size: int | None = None
    format: Literal["png", "jpeg", "webp"] = "png"
    paint_scale: float = 1.0


def paint(name: str, src: Path, settings: ApplySettings, fmt: str, source: str,
          mask: Path | None = None) -> tuple[bytes, dict]:
    """Decode, paint, encode (with provenance): the whole apply, in a pool thread. `mask`: where to paint
    (white paints, black keeps the photo; mask.py)."""
    from ...apply import assess

    filt = load_cached(name)
    img = open_image(src)
    settings = resolve_for(filt, settings, img)  # provenance records the precision and engine used
    styled = stylize_image(filt, img, settings, mask)
    # how far the picture lies from the filter's training photos, as `apply --json` says it (no confidence signal)
    seen = assess(filt, img, "upload") or {}
    media, suffix = OUTPUT_TYPES[fmt]
    with tempfile.TemporaryDirectory(prefix="rotoscope-") as d:
        prov = provenance(filt, settings, source)
        if mask is not None:
            from ...mask import describe

            prov["mask"] = {"mask": describe(mask).replace(mask.name, "upload", 1), "feather": settings.feather}
        out = save_image(styled, Path(d) / f"out{suffix}", prov)
        out_of = seen.get("outside")
        distance = {"X-Rotoscope-Distance": f"{seen['distance']:g}", "X-Rotoscope-Threshold": f"{seen['threshold']:g}",
                    "X-Rotoscope-In-Distribution": "true" if seen["in_distribution"] else "false",
                    **({"X-Rotoscope-Outside": f"{out_of['stat']} {out_of['value']:g} outside "
                                               f"{out_of['training_min']:g}-{out_of['training_max']:g}"}
                       if out_of else {})} if seen else {}
        return out.read_bytes(), {"X-Rotoscope-Filter": filt.name, "X-Rotoscope-Card-Hash": filt.card_hash,
                                  "X-Rotoscope-Size": f"{styled.width}x{styled.height}", **distance}


def paint_upload(name: str, upload, settings: ApplySettings, fmt: str, source: str, max_pixels: int,
                 what: str = "image", mask_upload=None):
    """Paint an upload (a file object) by way of a temporary file; errors name the upload (`what`, or "mask"),
    never the server's temporary path."""
    suffix, _ = sniff_image(upload, max_pixels, what)
    mask_suffix = sniff_image(mask_upload, max_pixels, "mask")[0] if mask_upload is not None else None
    with tempfile.TemporaryDirectory(prefix="rotoscope-") as d:
        src = save_upload(upload, Path(d) / f"in{suffix}")
        mask = save_upload(mask_upload, Path(d) / f"mask{mask_suffix}") if mask_upload is not None else None
        try:
            return paint(name, src, settings, fmt, source, mask)
        except RotoscopeError as e:
            msg = str(e).replace(str(src), what)
            if mask is not None:
                msg = msg.replace(str(mask), "mask")
            if msg == str(e):
                raise
            raise type(e)(msg) from None


class ClientGone(Exception):
    """The client hung up before its paint began."""


async def respond(request: Request, pool, work, *args) -> Response:
    """Paint in the apply pool and answer with the picture. A paint whose client has gone while it waited for a
    pool thread is dropped, not painted for nobody: the studio aborts a paint that a newer one supersedes, and two
    abandoned 12-megapixel paints would otherwise hold both threads while the paint the user is waiting for queues."""
    started = time.perf_counter()
    gone = threading.Event()

    def unless_gone():
        if gone.is_set():
            raise ClientGone
        return work(*args)

    running = asyncio.wrap_future(pool.submit(unless_gone))
    while not (await asyncio.wait({running}, timeout=0.25))[0]:
        if await request.is_disconnected():
            gone.set()  # a paint already begun runs to its end (PyTorch cannot be stopped midway): it is ignored
            running.cancel()
            return Response(status_code=499)  # nginx's "client closed request": nobody reads it
    data, headers = running.result()
    fmt = args[3]
    headers["X-Rotoscope-Seconds"] = f"{time.perf_counter() - started:.3f}"
    return Response(data, media_type=OUTPUT_TYPES[fmt][0], headers=headers)


@router.post("/filters/{name}/apply", tags=["apply"], response_class=Response,
             responses={200: {"content": {"image/png": {}, "image/jpeg": {}, "image/webp": {}}},
                        413: {"description": "upload or image too large"}, 415: {"description": "not an image"}})
async def apply(name: str, request: Request, cfg: SettingsDep, pool: PoolDep,
                image: UploadFile = File(..., description="The photo to paint."),
                strength: float = Form(1.0, description="0 = the photo, 1 = the full filter"),
                preserve_colors: bool = Form(False, description="keep the photo's colours"),
                size: int | None = Form(None, description="longer side of the output in pixels"),
                format: Literal["png", "jpeg", "webp"] = Form("png"),
                mask: UploadFile | None = File(None, description="where to paint: white paints, black keeps the "
                                               "photo, grey blends (any size: resized)"),
                keep: Literal[KEEPS] | None = Form(None, description="leave the faces or people found unpainted"),
                paint_scale: float = Form(1.0, description="paint at this share of the size, then restore the "
                                          "photo's edges by guided upsampling (0.1-1; 0.5: about 3x faster, bigger "
                                          "strokes)")):
    """Paint an uploaded image with a filter; returns the painted image (provenance in its metadata)."""
    check_name(name)
    settings = dataclasses.replace(apply_settings(cfg, strength, preserve_colors, size, paint_scale),
                                   keep=keep or None)
    return await respond(request, pool, paint_upload, name, image.file, settings, format, image.filename or "upload",
                         cfg.max_pixels, "image", mask.file if mask is not None else None)


def check_url(url: str) -> str:
    """An http(s) URL with a host that urllib can fetch, or one line (a malformed one was a bare 500)."""
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
        ok = parts.scheme in ("http", "https") and bool(parts.hostname) and not any(ch <= " " for ch in url)
    except ValueError:
        ok = False
    if not ok:
        raise Invalid("url must be an http:// or https:// URL with a host, and no spaces or control characters")
    return url


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """urllib follows redirects to ftp:// too: only http and https are fetched, as for the URL given."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if urllib.parse.urlsplit(newurl).scheme not in ("http", "https"):
            raise Invalid("the URL redirects to something other than http:// or https://: not fetched")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_fetcher = urllib.request.build_opener(_HttpOnlyRedirects)


@router.post("/filters/{name}/apply-url", tags=["apply"], response_class=Response,
             responses={200: {"content": {"image/png": {}}}, 403: {"description": "URL apply is disabled"}})
async def apply_url(name: str, body: UrlApply, request: Request, cfg: SettingsDep, pool: PoolDep):
    """Paint an image fetched from a URL. Off unless the server was started with --allow-url."""
    if not cfg.allow_url:
        raise Refused("applying to a URL is disabled on this server (start it with --allow-url)")
    check_url(body.url)
    check_name(name)
    settings = apply_settings(cfg, body.strength, body.preserve_colors, body.size, body.paint_scale)

    def fetch_and_paint(name, url, settings, fmt, source):
        with tempfile.SpooledTemporaryFile(max_size=1 << 22) as buf:
            try:
                with _fetcher.open(url, timeout=cfg.url_timeout) as r:  # noqa: S310 - scheme checked
                    while chunk := r.read(1 << 16):
                        buf.write(chunk)
                        if buf.tell() > cfg.max_upload_bytes:
                            raise TooLarge(f"the image at the URL is over the "
                                           f"{cfg.max_upload_bytes / 2**20:.1f} MiB limit")
            except (OSError, ValueError, http.client.HTTPException) as e:  # ValueError: an IDNA label too long...
                raise Invalid(f"could not fetch the URL: {e}") from None
            return paint_upload(name, buf, settings, fmt, source, cfg.max_pixels)

    return await respond(request, pool, fetch_and_paint, name, body.url, settings, body.format, body.url)
