"""What the story page (explain.py) and the audit page (audit.py) both do to build a self-contained HTML page.

Every picture and every matplotlib figure is embedded as a data URI, so a page is one file that fetches nothing.
Text from cards, file names and settings goes through `esc`; the markup helpers return HTML fragments.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

from PIL import Image

from ..errors import Invalid

# the story page (`rotoscope explain`): a long read, with .tech notes, .warn boxes and .missing gaps
STORY_CSS = """
body{font:16px/1.55 Georgia,'Times New Roman',serif;max-width:980px;margin:2em auto;padding:0 1.2em;color:#222}
h1{font-size:2em;margin-bottom:.2em}h2{margin-top:2.2em;border-bottom:2px solid #ddd;padding-bottom:.2em}
.lede{font-size:1.1em;color:#444}.tech{font:13px/1.5 ui-monospace,Menlo,monospace;color:#555;background:#f6f6f4;
padding:.5em .8em;border-left:3px solid #bbb}.warn{background:#fff4e5;border-left:4px solid #e08a00;padding:.6em 1em}
.missing{background:#f2f2f2;border-left:4px solid #999;padding:.5em 1em;color:#555;font-style:italic}
.row{display:flex;flex-wrap:wrap;gap:12px;align-items:flex-end}.row figure{margin:0;text-align:center}
figure img{border:1px solid #ccc;display:block;max-width:100%;height:auto}figcaption{font-size:13px;color:#555}
table{border-collapse:collapse;font-size:14px}td,th{border-bottom:1px solid #e4e4e4;padding:3px 10px;text-align:left}
.pal{display:flex;height:34px;width:420px;max-width:100%;border:1px solid #aaa;margin:4px 0 12px}.pal div{height:100%}
pre{white-space:pre-wrap;font-size:12.5px}ul.check li{margin-bottom:.4em}
"""

# the audit page (`rotoscope audit`): histograms, the warnings and the terminal summary
AUDIT_CSS = ("body{font:15px/1.5 system-ui,sans-serif;max-width:1000px;margin:2em auto;padding:0 1em}"
             "pre{white-space:pre-wrap;font-size:13px}.warn li{color:#a40}")


# ---------------------------------------------------------------- text and markup


def esc(x) -> str:
    """Any value as HTML text."""
    return html.escape(str(x))


def items(things) -> str:
    """The <li> elements of a list, one per thing, escaped."""
    return "".join(f"<li>{esc(x)}</li>" for x in things)


def missing(what: str) -> str:
    """The grey box that says what a page could not show."""
    return f'<p class="missing">Missing: {esc(what)}</p>'


def section(key: str, title: str, body: str) -> str:
    """One section of a page: anchor `key`, heading `title` (HTML), then its body (HTML)."""
    return f'<section id="{key}"><h2>{title}</h2>{body}</section>'


def page_path(path, other: tuple[str, ...] = ()) -> Path:
    """The path a page is written to, refused in one line unless it ends in .html or .htm (or one of `other`):
    HTML written into x.png opens as a broken picture."""
    path = Path(path)
    if path.suffix.lower() not in (".html", ".htm", *other):
        raise Invalid(f"{path}: the page is HTML, so its file name ends in .html"
                      + (f" (or {' or '.join(other)})" if other else ""))
    return path


def document(title: str, css: str, body: str) -> str:
    """A whole page: `title` is text (escaped here), `css` the style sheet, `body` HTML."""
    return (f"<!doctype html><html lang=en><meta charset=utf-8><meta name=viewport content='width=device-width'>"
            f"<title>{esc(title)}</title><style>{css}</style><body>{body}</body></html>")


# ---------------------------------------------------------------- pictures and figures


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def jpeg_uri(img: Image.Image, side: int = 240) -> str:
    """A picture shrunk to fit `side` pixels, as a JPEG data URI."""
    img = img.convert("RGB").copy()
    img.thumbnail((side, side), Image.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=88)
    return data_uri(buf.getvalue(), "image/jpeg")


def figure(img: Image.Image | None, caption: str, side: int = 200) -> str:
    """A captioned picture (nothing when there is no picture)."""
    if img is None:
        return ""
    return (f'<figure><img alt="{esc(caption)}" src="{jpeg_uri(img, side)}" width="{side}">'
            f"<figcaption>{esc(caption)}</figcaption></figure>")


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed), imported on first use: it is slow to import."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png_bytes(fig) -> bytes:
    """A drawn matplotlib figure as PNG bytes: laid out tight, saved, then closed."""
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    pyplot().close(fig)
    return buf.getvalue()


def png_img(png: bytes, alt: str) -> str:
    """PNG bytes as an embedded <img> as wide as the page allows."""
    return f'<img alt="{esc(alt)}" src="{data_uri(png, "image/png")}" style="max-width:100%">'


def chart(draw, size=(9.0, 3.6)) -> str:
    """Render a matplotlib drawing function `draw(fig, ax)` to an embedded PNG <img>."""
    fig, ax = pyplot().subplots(figsize=size, dpi=90)
    draw(fig, ax)
    return png_img(png_bytes(fig), "chart")
