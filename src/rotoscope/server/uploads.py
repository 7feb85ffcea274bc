"""What the server accepts: body-size limits, and the real type of an upload sniffed from its bytes.

A file's name and declared content type are never trusted: an image is what Pillow recognises from its header
(checked for pixel count before anything is decoded), a video is what its container signature says.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import BinaryIO, Callable

from fastapi import HTTPException
from PIL import Image, UnidentifiedImageError

from ..errors import TooLarge, Unsupported
from ..paths import atomic_path

IMAGE_FORMATS = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp", "BMP": ".bmp", "GIF": ".gif", "TIFF": ".tif"}


class BodyLimit:
    """ASGI middleware: refuse a request body over its route's limit with 413, before or while it streams in."""

    def __init__(self, app, limit_for: Callable[[str], int]):
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        limit = self.limit_for(scope["path"])
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return await _too_large(send, limit)
        seen = 0

        async def limited():
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > limit:  # a chunked body, or a Content-Length that lied
                    # HTTPException, not TooLarge: FastAPI turns any other error while reading a body into a 400
                    raise HTTPException(413, too_large_message(limit))
            return msg

        await self.app(scope, limited, send)


def too_large_message(limit: int) -> str:
    return f"upload too large: the limit is {limit / 2**20:.1f} MiB per request"


async def _too_large(send, limit: int) -> None:
    import json

    body = json.dumps({"detail": too_large_message(limit)}).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


def sniff_image(f: BinaryIO, max_pixels: int, what: str = "upload") -> tuple[str, tuple[int, int]]:
    """The image's file suffix (from its bytes) and size; Unsupported if not an image, TooLarge if over the pixel
    limit (415 and 413 from the server)."""
    f.seek(0)
    try:
        with Image.open(f) as img:  # reads the header only
            fmt, size = img.format, img.size
    except Image.DecompressionBombError:
        raise TooLarge(f"{what}: image has more pixels than the {max_pixels:,}-pixel limit") from None
    except (UnidentifiedImageError, OSError, ValueError):
        raise Unsupported(f"{what}: not an image (accepted: {', '.join(IMAGE_FORMATS)}; "
                          "the type is read from the file's bytes, not its name)") from None
    finally:
        f.seek(0)
    if fmt not in IMAGE_FORMATS:
        raise Unsupported(f"{what}: {fmt} images are not accepted (accepted: {', '.join(IMAGE_FORMATS)})")
    if size[0] * size[1] > max_pixels:
        raise TooLarge(f"{what}: image is {size[0]}x{size[1]} = {size[0] * size[1]:,} pixels; the limit "
                       f"is {max_pixels:,}")
    return IMAGE_FORMATS[fmt], size


def sniff_video(f: BinaryIO, what: str = "upload") -> str:
    """The video container's file suffix from its signature; Unsupported (415) if it is not a container we read."""
    f.seek(0)
    head = f.read(64)
    f.seek(0)
    if len(head) >= 12 and head[4:8] == b"ftyp":
        return ".mov" if head[8:10] == b"qt" else ".mp4"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return ".webm" if b"webm" in head else ".mkv"
    if head.startswith(b"RIFF") and head[8:12] == b"AVI ":
        return ".avi"
    if head.startswith((b"GIF87a", b"GIF89a")):  # an animated GIF or WebP is painted as a clip, and comes back as one
        return ".gif"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return ".webp"
    raise Unsupported(f"{what}: not a video (accepted: MP4/MOV, MKV/WebM, AVI, animated GIF or WebP; the type is "
                      "read from the file's bytes, not its name)")


def save_upload(f: BinaryIO, dest: Path) -> Path:
    """Copy an upload to `dest` atomically."""
    f.seek(0)
    with atomic_path(dest) as tmp, open(tmp, "wb") as out:
        shutil.copyfileobj(f, out, 1 << 20)
    return dest
