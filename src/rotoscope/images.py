"""Reading and writing pictures: any mode, EXIF orientation, clear errors, atomic writes with provenance."""

from __future__ import annotations

import io
import json
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError

from .errors import Invalid, NotFound, TooLarge
from .paths import atomic_path

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif"}
WRITE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".bmp": "BMP", ".tif": "TIFF",
                 ".tiff": "TIFF"}


def max_pixels() -> int:
    """Pillow's decompression-bomb limit, overridable with ROTOSCOPE_MAX_PIXELS."""
    env = os.environ.get("ROTOSCOPE_MAX_PIXELS")
    if env is None:
        return Image.MAX_IMAGE_PIXELS or 89_478_485
    try:
        return int(env.replace("_", "").replace(",", ""))
    except ValueError:
        raise Invalid(f"ROTOSCOPE_MAX_PIXELS must be a whole number of pixels, not '{env}'") from None


def open_image(path: str | os.PathLike) -> Image.Image:
    """Open and fully decode an image, upright (EXIF orientation applied). Raises RotoscopeError with one line."""
    path = Path(path)
    if not path.exists():
        raise NotFound(f"no such file: {path}")
    if path.is_dir():
        raise Invalid(f"{path} is a folder, not an image")
    if not path.is_file():
        raise Invalid(f"{path} is not a regular file (a pipe, socket or device): rotoscope reads image files")
    limit = max_pixels()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            old = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = limit
            try:
                img = Image.open(path)
                if img.width * img.height > limit:
                    raise Image.DecompressionBombError("")
                img.load()
            finally:
                Image.MAX_IMAGE_PIXELS = old
            return ImageOps.exif_transpose(img)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise TooLarge(f"{path}: image is larger than the {limit:,}-pixel safety limit "
                       "(set ROTOSCOPE_MAX_PIXELS to raise it)") from None
    except UnidentifiedImageError:
        raise Invalid(f"{path}: not an image (or a format Pillow cannot read)") from None
    except OSError as e:
        raise Invalid(f"{path}: cannot decode image ({e})") from None
    except Exception as e:  # a damaged header trips Pillow's parsers in other ways (ValueError, SyntaxError, ...)
        reason = (str(e).splitlines() or [type(e).__name__])[0][:120]
        raise Invalid(f"{path}: cannot decode image ({reason})") from None


def can_be_transparent(img: Image.Image) -> bool:
    """Whether the picture's mode can hold transparency: an alpha channel, or a transparent colour (a palette
    entry, or an RGB or grey value named by a PNG's tRNS chunk or a GIF)."""
    return img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info


def split_alpha(img: Image.Image) -> tuple[Image.Image, Image.Image | None]:
    """RGB image plus the alpha channel if the input had one (RGBA, LA, PA, or a transparent colour: a palette
    entry, or an RGB or grey value named by a PNG's tRNS chunk)."""
    if img.mode in ("La", "RGBa"):  # premultiplied alpha (Pillow converts these only to their plain forms)
        img = img.convert(img.mode.upper())
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit grayscale: scale to 8 bits without clipping the top 8 bits away
        arr = np.asarray(img, dtype=np.float64)
        # I;16 is 16-bit by definition; a 32-bit "I" image is taken as 16-bit data unless it fits in 8 bits
        top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        img = Image.fromarray(np.clip(arr / top * 255 + 0.5, 0, 255).astype(np.uint8), "L")
    elif img.mode == "F":
        # 32-bit float grey: in [0, 1], as float pictures usually are (a float TIFF was painted as a black one);
        # otherwise taken as 8-bit levels
        arr = np.nan_to_num(np.asarray(img, dtype=np.float64))
        top = 1.0 if arr.size and 0 <= arr.min() and arr.max() <= 1 else 255.0
        img = Image.fromarray(np.clip(arr / top * 255 + 0.5, 0, 255).astype(np.uint8), "L")
    if img.mode in ("P", "PA") and img.info.get("icc_profile"):  # the palette's colours are what the profile means
        img = img.convert("RGBA" if can_be_transparent(img) else "RGB")
    img = to_srgb(img)
    if can_be_transparent(img):
        rgba = img.convert("RGBA")
        return rgba.convert("RGB"), rgba.getchannel("A")
    return img.convert("RGB"), None


def to_srgb(img: Image.Image) -> Image.Image:
    """Pixels tagged with a colour profile other than sRGB (a phone's Display P3, Adobe RGB, a CMYK press profile)
    converted to sRGB, which every step after assumes and every output is read as (they carry no profile): read
    as sRGB numbers, a P3 photo's colours came out duller. sRGB-tagged and untagged pictures are left as they are;
    a profile LittleCMS cannot use is ignored."""
    icc = img.info.get("icc_profile")
    if not icc or img.mode not in ("RGB", "RGBA", "L", "LA", "CMYK"):
        return img
    try:
        from PIL import ImageCms  # a Pillow built without LittleCMS has none: the profile is ignored

        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        said = ImageCms.getProfileDescription(profile).lower()
        if "srgb" in said and "linear" not in said:
            return img
        alpha = img.getchannel("A") if img.mode in ("RGBA", "LA") else None
        base = img.convert(img.mode[:-1]) if alpha is not None else img
        out = ImageCms.profileToProfile(base, profile, ImageCms.createProfile("sRGB"), outputMode="RGB")
    except Exception:  # noqa: BLE001 - ImageCms.PyCMSError (a broken profile), no LittleCMS in this Pillow: ignored
        return img
    if alpha is not None:
        out.putalpha(alpha)
    return out


def over_white(rgb: Image.Image, alpha: Image.Image | None) -> Image.Image:
    """A picture as a viewer on a white page shows it: the one rule for every transparent input (an artwork, a
    photo, an animation's frames, numbered frames, a clip with an alpha channel)."""
    if alpha is None:
        return rgb
    rgba = rgb.convert("RGBA")
    rgba.putalpha(alpha)
    return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")


def load_rgb(path: str | os.PathLike) -> Image.Image:
    """A picture file as it is seen, in RGB: its transparent pixels white. (The colour a file keeps under them is
    invisible, yet an artwork's palette learned it: a logo on a transparent ground taught black, or green.)"""
    return over_white(*split_alpha(open_image(path)))


def to_uint8_tensor(img: Image.Image) -> torch.Tensor:
    """PIL RGB -> uint8 tensor (1, 3, H, W), a view of one writable copy of the pixels."""
    arr = np.array(img.convert("RGB"), dtype=np.uint8)  # writable (torch wants one)
    return torch.from_numpy(arr).permute(2, 0, 1).unsqueeze(0)


def as_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> float in [0, 1]; float passes through."""
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x


def to_tensor(img: Image.Image) -> torch.Tensor:
    """PIL RGB -> float tensor (1, 3, H, W) in [0, 1]."""
    # from uint8 straight to one float tensor: no float copies on the way (a 24-megapixel photo is 288 MB in float)
    return as_float(to_uint8_tensor(img)).contiguous()


def to_image(t: torch.Tensor) -> Image.Image:
    """Float tensor (1, 3, H, W) or (3, H, W) in [0, 1] -> PIL RGB (rounded, clipped)."""
    t = t.detach().squeeze(0).float().mul(255.0).add_(0.5).clamp_(0, 255)  # one float temporary, then uint8
    arr = t.to(torch.uint8).permute(1, 2, 0).contiguous().cpu().numpy()
    return Image.fromarray(arr, "RGB")


def longer_side(w: int, h: int, size: int | None, what: str = "a {w}x{h} picture") -> tuple[int, int]:
    """(w, h) scaled so the longer side is `size` (both ways); None keeps them. A size that would make a picture
    over the pixel safety limit is refused here (a 96x64 photo asked for at 100000 px took all the memory), the
    refusal naming the input as `what` says."""
    if not size or max(w, h) == size:
        return w, h
    s = size / max(w, h)
    out = max(1, round(w * s)), max(1, round(h * s))
    check_pixels(*out, f"{what.format(w=w, h=h)} at longer side {size}")
    return out


def check_pixels(w: int, h: int, what: str) -> None:
    """Refuse in one line a picture of w x h over the pixel safety limit (max_pixels)."""
    if w * h > (limit := max_pixels()):
        raise TooLarge(f"{what} would be {w}x{h}, over the {limit:,}-pixel safety limit (set ROTOSCOPE_MAX_PIXELS "
                       "to raise it)")


def resize_longer(img: Image.Image, size: int | None) -> Image.Image:
    """Scale so the longer side is `size` (both ways); None keeps the image as it is."""
    wh = longer_side(*img.size, size)
    return img if wh == img.size else img.resize(wh, Image.LANCZOS)


def save_image(img: Image.Image, path: str | os.PathLike, provenance: dict | None = None, quality: int = 95) -> Path:
    """Write atomically in the format the extension names, with provenance in PNG text or JPEG/WebP EXIF."""
    path = Path(path)
    fmt = WRITE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise Invalid(f"cannot write '{path.suffix or path.name}': use one of {', '.join(sorted(WRITE_FORMATS))}")
    kwargs: dict = {}
    if fmt == "JPEG" and img.mode not in ("RGB", "L"):
        img = img.convert("RGB")  # JPEG has no alpha
    if fmt in ("JPEG", "WEBP"):
        kwargs["quality"] = quality
    if provenance:
        text = json.dumps(provenance, sort_keys=True)
        if fmt == "PNG":
            info = PngImagePlugin.PngInfo()
            info.add_text("rotoscope", text)
            info.add_text("Software", f"rotoscope {provenance.get('rotoscope_version', '')}".strip())
            kwargs["pnginfo"] = info
        elif fmt in ("JPEG", "WEBP", "TIFF"):
            kwargs["exif"] = provenance_exif(text)
    with atomic_path(path) as tmp:
        img.save(tmp, format=fmt, **kwargs)
    return path


def as_shown(rgb: np.ndarray, rotation: int, flip: bool = False) -> np.ndarray:
    """A clip's frame (or mask) as stored -> as shown by its display matrix: turned `rotation` degrees
    counter-clockwise (as PyAV reports it), then mirrored left to right where the matrix flips (FFmpeg applies its
    flip after the rotation)."""
    k = {90: 1, 180: 2, 270: 3}.get(rotation % 360, 0)
    if not (k or flip):
        return rgb
    out = np.rot90(rgb, k)
    return np.ascontiguousarray(out[:, ::-1] if flip else out)


def as_stored(shown: np.ndarray, rotation: int, flip: bool = False) -> np.ndarray:
    """as_shown undone: a mask drawn on the picture as shown, or faces found upright, -> the stored frame's way."""
    k = {90: 1, 180: 2, 270: 3}.get(rotation % 360, 0)
    if not (k or flip):
        return shown
    return np.ascontiguousarray(np.rot90(shown[:, ::-1] if flip else shown, -k))


def provenance_exif(text: str) -> bytes:
    """EXIF carrying a provenance's JSON (ImageDescription), for JPEG, WebP and TIFF outputs, stills or animated."""
    exif = Image.Exif()
    exif[0x0131] = "rotoscope"  # Software
    exif[0x010E] = text  # ImageDescription
    return exif.tobytes()


def read_provenance(path: str | os.PathLike) -> dict | None:
    """The provenance a rotoscope output carries (PNG text, EXIF, or an animated GIF's comment), or None."""
    with Image.open(path) as img:
        text = img.info.get("rotoscope") or img.getexif().get(0x010E) or img.info.get("comment")
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    try:
        return json.loads(text) if text else None
    except json.JSONDecodeError:
        return None


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files directly in a folder, sorted by name (hidden files skipped)."""
    folder = Path(folder)
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                  and not p.name.startswith("."))
