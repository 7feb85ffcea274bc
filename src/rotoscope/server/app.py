"""The HTTP API and the studio page: a thin skin over the library (filters, stylize, train, video).

Image applies run in a bounded thread pool (PyTorch releases the GIL), so the event loop keeps answering while
pictures are painted. Training and video run as jobs in worker processes (runner.py), recorded in SQLite (jobs.py).
OpenAPI docs are at /docs.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import functools
import json
import secrets
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

from fastapi import APIRouter, Depends, FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel

from .. import __version__
from ..backbones import BACKBONES
from ..config import ServerConfig, TrainConfig
from ..errors import RotoscopeError
from ..filter import (SHIPPED_DIR, check_name, list_filters, load_filter_file, read_card, registry_paths,
                      remove_filter)
from ..images import open_image, save_image
from ..stylize import ApplySettings, provenance, resolve_for, stylize_image
from .jobs import FINISHED, Job, JobStore, database_path, server_dir
from .runner import Scheduler, log_tail
from .uploads import BodyLimit, sniff_image, sniff_video, save_upload

STATIC = Path(__file__).parent / "static"
OUTPUT_TYPES = {"png": ("image/png", ".png"), "jpeg": ("image/jpeg", ".jpg"), "webp": ("image/webp", ".webp")}
PREVIEW_SIZE = 256
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


def needs_token(host: str) -> bool:
    """Binding anywhere but loopback exposes the server: then a token is required."""
    return host not in LOCAL_HOSTS and not host.startswith("127.")


# ---------------------------------------------------------------- library calls, cached and run off the event loop


@functools.lru_cache(maxsize=16)
def _load(path: str, mtime_ns: int):
    return load_filter_file(path)


def find_filter(name: str) -> Path:
    """A registry filter's file by name. Unlike the CLI, never a path: a request names filters, not files."""
    known = registry_paths()
    if check_name(name) in known:
        return known[name]
    near = difflib.get_close_matches(name, list(known), n=3, cutoff=0.5)
    raise RotoscopeError(f"unknown filter '{name}'" + (f"; did you mean {', '.join(near)}?" if near else ""))


def load_cached(name: str):
    """A registry filter by name, loaded once per version of its file."""
    path = find_filter(name)
    return _load(str(path), path.stat().st_mtime_ns)


@functools.lru_cache(maxsize=1)
def _preview_photo():
    from ..data import sample_photos

    return next(p.image for p in sample_photos() if p.name == "chelsea")


def _http_error(e: RotoscopeError) -> HTTPException:
    msg = str(e)
    if msg.startswith("unknown filter") or msg.startswith("no such filter"):
        return HTTPException(404, msg)
    if msg.startswith("invalid filter name"):
        return HTTPException(422, msg)
    if "ships with rotoscope" in msg:
        return HTTPException(403, msg)
    if "safety limit" in msg:
        return HTTPException(413, msg)
    return HTTPException(422, msg)


# ---------------------------------------------------------------- the app


class UrlApply(BaseModel):
    url: str
    strength: float = 1.0
    preserve_colors: bool = False
    size: int | None = None
    format: Literal["png", "jpeg", "webp"] = "png"


def create_app(settings: ServerConfig | None = None, *, run_jobs: bool = True) -> FastAPI:
    """The FastAPI app. `run_jobs=False` records jobs without starting workers (for tests of the API alone)."""
    cfg = settings or ServerConfig()
    store = JobStore(database_path(cfg.database), server_dir() / "jobs")
    scheduler = Scheduler(store, cfg.max_jobs, cfg.job_attempts)
    pool = ThreadPoolExecutor(max_workers=max(1, cfg.apply_threads), thread_name_prefix="rotoscope-apply")

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        if run_jobs:
            scheduler.start()
        yield
        if run_jobs:
            await asyncio.get_running_loop().run_in_executor(None, scheduler.shutdown)
        pool.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="rotoscope", version=__version__, lifespan=lifespan,
                  description="Train style filters from one artwork and paint images and video with them. "
                              "When the server has a token, send it as `Authorization: Bearer TOKEN` "
                              "(or `?token=TOKEN` for links and event streams).")
    app.state.settings, app.state.store, app.state.scheduler, app.state.pool = cfg, store, scheduler, pool

    def limit_for(path: str) -> int:
        return cfg.max_video_bytes if path.rstrip("/").endswith("/jobs/video") else cfg.max_upload_bytes

    app.add_middleware(BodyLimit, limit_for=limit_for)

    def authorize(request: Request) -> None:
        if not cfg.token:
            return
        auth = request.headers.get("authorization", "")
        given = auth[7:] if auth.lower().startswith("bearer ") else request.query_params.get("token", "")
        if not secrets.compare_digest(given.encode(), cfg.token.encode()):
            raise HTTPException(401, "this server needs an API token: send 'Authorization: Bearer TOKEN'",
                                headers={"WWW-Authenticate": "Bearer"})

    api = APIRouter(prefix="/api", dependencies=[Depends(authorize)])

    async def off_loop(fn, *args):
        """Run blocking work in the apply pool so the event loop stays free."""
        return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)

    # ------------------------------------------------------------ health (no token: monitors need it)

    @app.get("/api/health", tags=["server"])
    def health():
        """Liveness and a summary: version, filters, jobs by state, workers running."""
        counts = {s: len(store.list((s,), limit=10_000)) for s in ("queued", "running")}
        return {"status": "ok", "version": __version__, "filters": len(list_filters()), "jobs": counts,
                "workers": scheduler.running(), "scheduler": scheduler.alive() if run_jobs else "disabled",
                "max_jobs": cfg.max_jobs, "url_apply": cfg.allow_url, "token_required": bool(cfg.token)}

    # ------------------------------------------------------------ filters

    def filter_summary(name: str, path: Path, card: dict | None) -> dict:
        card = card or {}
        hist = card.get("history") or {}
        return {"name": name, "shipped": path.parent == SHIPPED_DIR, "readable": bool(card),
                "artwork": (card.get("artwork") or {}).get("title"), "backbone": (card.get("backbone") or {}).get("name"),
                "steps": (card.get("timings") or {}).get("steps"), "size": (card.get("training") or {}).get("size"),
                "created": card.get("created"), "holdout_last": hist.get("holdout_last"),
                "train_last": hist.get("train_last"), "preview_url": f"/api/filters/{name}/preview"}

    @api.get("/filters", tags=["filters"])
    def filters():
        """Every filter in the registry with a summary of its card."""
        return [filter_summary(n, p, c) for n, p, c in list_filters()]

    @api.get("/filters/{name}", tags=["filters"])
    def filter_card(name: str):
        """A filter's full card: what it is and how it was made."""
        try:
            path = find_filter(check_name(name))
            return {"name": name, "card": read_card(path)}
        except RotoscopeError as e:
            raise _http_error(e) from None

    @api.delete("/filters/{name}", tags=["filters"])
    def delete_filter(name: str):
        """Remove a filter from the registry (shipped filters cannot be removed)."""
        try:
            path = remove_filter(name)
        except RotoscopeError as e:
            raise _http_error(e) from None
        return {"deleted": name, "path": str(path)}

    @api.get("/filters/{name}/preview", tags=["filters"], response_class=Response,
             responses={200: {"content": {"image/png": {}}}})
    async def filter_preview(name: str):
        """The filter applied to a sample photo (made once per version of the filter, then cached)."""
        def work():
            filt = load_cached(name)
            dest = server_dir() / "previews" / f"{filt.name}-{filt.card_hash}.png"
            if not dest.exists():
                photo = _preview_photo()
                settings = resolve_for(filt, ApplySettings(size=PREVIEW_SIZE), photo)
                save_image(stylize_image(filt, photo, settings), dest, provenance(filt, settings, "sample photo"))
            return dest

        try:
            dest = await off_loop(work)
        except RotoscopeError as e:
            raise _http_error(e) from None
        return FileResponse(dest, media_type="image/png")

    # ------------------------------------------------------------ apply

    def apply_settings(strength: float, preserve_colors: bool, size: int | None) -> ApplySettings:
        if not 0.0 <= strength <= 1.0:
            raise HTTPException(422, f"strength must be between 0 and 1 (got {strength})")
        if size is not None and not 16 <= size <= cfg.max_output_side:
            raise HTTPException(422, f"size must be between 16 and {cfg.max_output_side} pixels (got {size})")
        return ApplySettings(size=size, strength=strength, preserve_colors=preserve_colors)

    def paint(name: str, src: Path, settings: ApplySettings, fmt: str, source: str) -> tuple[bytes, dict]:
        """Decode, paint, encode (with provenance): the whole apply, in a pool thread."""
        filt = load_cached(name)
        img = open_image(src)
        settings = resolve_for(filt, settings, img)  # provenance records the precision and engine used
        styled = stylize_image(filt, img, settings)
        media, suffix = OUTPUT_TYPES[fmt]
        with tempfile.TemporaryDirectory(prefix="rotoscope-") as d:
            prov = provenance(filt, settings, source)
            out = save_image(styled, Path(d) / f"out{suffix}", prov)
            return out.read_bytes(), {"X-Rotoscope-Filter": filt.name, "X-Rotoscope-Card-Hash": filt.card_hash,
                                      "X-Rotoscope-Size": f"{styled.width}x{styled.height}"}

    def paint_upload(name: str, upload, settings: ApplySettings, fmt: str, source: str):
        suffix, _ = sniff_image(upload, cfg.max_pixels, "image")
        with tempfile.TemporaryDirectory(prefix="rotoscope-") as d:
            src = save_upload(upload, Path(d) / f"in{suffix}")
            return paint(name, src, settings, fmt, source)

    async def respond(work, *args) -> Response:
        started = time.perf_counter()
        try:
            data, headers = await off_loop(work, *args)
        except RotoscopeError as e:
            raise _http_error(e) from None
        fmt = args[3]
        headers["X-Rotoscope-Seconds"] = f"{time.perf_counter() - started:.3f}"
        return Response(data, media_type=OUTPUT_TYPES[fmt][0], headers=headers)

    @api.post("/filters/{name}/apply", tags=["apply"], response_class=Response,
              responses={200: {"content": {"image/png": {}, "image/jpeg": {}, "image/webp": {}}},
                         413: {"description": "upload or image too large"}, 415: {"description": "not an image"}})
    async def apply(name: str, image: UploadFile = File(..., description="The photo to paint."),
                    strength: float = Form(1.0, description="0 = the photo, 1 = the full filter"),
                    preserve_colors: bool = Form(False, description="keep the photo's colours"),
                    size: int | None = Form(None, description="longer side of the output in pixels"),
                    format: Literal["png", "jpeg", "webp"] = Form("png")):
        """Paint an uploaded image with a filter; returns the painted image (provenance in its metadata)."""
        try:
            check_name(name)
        except RotoscopeError as e:
            raise _http_error(e) from None
        settings = apply_settings(strength, preserve_colors, size)
        return await respond(paint_upload, name, image.file, settings, format, image.filename or "upload")

    @api.post("/filters/{name}/apply-url", tags=["apply"], response_class=Response,
              responses={200: {"content": {"image/png": {}}}, 403: {"description": "URL apply is disabled"}})
    async def apply_url(name: str, body: UrlApply):
        """Paint an image fetched from a URL. Off unless the server was started with --allow-url."""
        if not cfg.allow_url:
            raise HTTPException(403, "applying to a URL is disabled on this server (start it with --allow-url)")
        if not body.url.startswith(("http://", "https://")):
            raise HTTPException(422, "url must start with http:// or https://")
        try:
            check_name(name)
        except RotoscopeError as e:
            raise _http_error(e) from None
        settings = apply_settings(body.strength, body.preserve_colors, body.size)

        def fetch_and_paint(name, url, settings, fmt, source):
            with tempfile.SpooledTemporaryFile(max_size=1 << 22) as buf:
                try:
                    with urllib.request.urlopen(url, timeout=cfg.url_timeout) as r:  # noqa: S310 - scheme checked
                        while chunk := r.read(1 << 16):
                            buf.write(chunk)
                            if buf.tell() > cfg.max_upload_bytes:
                                raise HTTPException(413, f"the image at the URL is over the "
                                                         f"{cfg.max_upload_bytes / 2**20:.1f} MiB limit")
                except OSError as e:
                    raise HTTPException(422, f"could not fetch the URL: {e}") from None
                return paint_upload(name, buf, settings, fmt, source)

        return await respond(fetch_and_paint, name, body.url, settings, body.format, body.url)

    # ------------------------------------------------------------ jobs

    def job_view(job: Job, detail: bool = False) -> dict:
        d = job.to_dict()
        for k in ("pid", "heartbeat", "folder", "history"):
            d.pop(k)
        d["links"] = {"self": f"/api/jobs/{job.id}", "events": f"/api/jobs/{job.id}/events",
                      "preview": f"/api/jobs/{job.id}/preview" if job.preview_step else None,
                      "result": f"/api/jobs/{job.id}/result" if job.status == "done" else None}
        if detail:
            d["history"] = job.history
            d["log"] = log_tail(Path(job.folder), 20)
        return d

    def get_job(job_id: str, history: bool = False) -> Job:
        job = store.get(job_id, history=history) if job_id.isalnum() else None
        if job is None:
            raise HTTPException(404, f"no job '{job_id}'")
        return job

    @api.post("/jobs/train", status_code=202, tags=["jobs"])
    def start_training(
        artwork: UploadFile = File(..., description="The artwork whose style the filter learns."),
        name: str = Form(..., description="Name of the new filter."),
        photos: list[UploadFile] = File(default=[], description="Training photos (default: built-in sample set)."),
        title: str | None = Form(None), overwrite: bool = Form(False),
        steps: int | None = Form(None), size: int | None = Form(None), batch: int | None = Form(None),
        lr: float | None = Form(None), backbone: str | None = Form(None),
        style_weight: float | None = Form(None), content_weight: float | None = Form(None),
        color_weight: float | None = Form(None), tv_weight: float | None = Form(None),
        channels: str | None = Form(None, description="three widths, e.g. 32,64,128"),
        res_blocks: int | None = Form(None), seed: int | None = Form(None),
        checkpoint_every: int | None = Form(None), precision: Literal["auto", "bf16", "fp16", "fp32"] | None = Form(None),
    ):
        """Start training a filter from an uploaded artwork (+ optional photos). Returns the job (202)."""
        try:
            check_name(name)
        except RotoscopeError as e:
            raise _http_error(e) from None
        if backbone is not None and backbone != "auto" and backbone not in BACKBONES:
            raise HTTPException(422, f"unknown backbone '{backbone}' (use auto, {', '.join(BACKBONES)})")
        try:
            ch = tuple(int(c) for c in channels.split(",")) if channels else None
        except ValueError:
            raise HTTPException(422, "channels takes three integers, e.g. 32,64,128") from None
        if ch is not None and (len(ch) != 3 or not all(1 <= c <= 512 for c in ch)):
            raise HTTPException(422, "channels takes three widths between 1 and 512, e.g. 32,64,128")
        checks = {"steps": (steps, 1, cfg.max_train_steps), "size": (size, 16, 1024), "batch": (batch, 1, 64),
                  "res_blocks": (res_blocks, 0, 16), "checkpoint_every": (checkpoint_every, 1, 100_000)}
        for field, (v, lo, hi) in checks.items():
            if v is not None and not lo <= v <= hi:
                raise HTTPException(422, f"{field} must be between {lo} and {hi} (got {v})")
        if lr is not None and not 0 < lr < 1:
            raise HTTPException(422, f"lr must be between 0 and 1 (got {lr})")
        tcfg = TrainConfig().replace(steps=steps, size=size, batch=batch, lr=lr, backbone=backbone,
                                     style_weight=style_weight, content_weight=content_weight,
                                     color_weight=color_weight, tv_weight=tv_weight, channels=ch,
                                     res_blocks=res_blocks, seed=seed, checkpoint_every=checkpoint_every,
                                     precision=precision)
        if store.active_with_name("train", name):
            raise HTTPException(409, f"a job is already training '{name}'")
        if not overwrite:
            with contextlib.suppress(RotoscopeError):
                find_filter(name)
                raise HTTPException(409, f"a filter named '{name}' exists; pass overwrite=true to replace it")
        art_suffix, _ = sniff_image(artwork.file, cfg.max_pixels, "artwork")
        photo_suffixes = [sniff_image(p.file, cfg.max_pixels, f"photo {p.filename}")[0] for p in photos]
        job_id = store.new_id()
        folder = store.folder(job_id)
        save_upload(artwork.file, folder / f"artwork{art_suffix}")
        for i, (p, suffix) in enumerate(zip(photos, photo_suffixes)):
            save_upload(p.file, folder / "photos" / f"{i:04d}{suffix}")
        params = {"artwork": f"artwork{art_suffix}", "title": title or Path(artwork.filename or "artwork").stem,
                  "photos": len(photos), "config": tcfg.to_dict()}
        job = store.create(job_id, "train", name, params, total=tcfg.steps)
        return job_view(job)

    @api.post("/jobs/video", status_code=202, tags=["jobs"])
    def start_video(video: UploadFile = File(..., description="The clip to paint."),
                    filter: str = Form(..., description="Filter name."),
                    strength: float = Form(1.0), preserve_colors: bool = Form(False), size: int | None = Form(None),
                    stabilize: bool = Form(True, description="flicker reduction along the optical flow")):
        """Paint an uploaded video as a job; download the result from the job's result link when done."""
        try:
            find_filter(check_name(filter))
        except RotoscopeError as e:
            raise _http_error(e) from None
        settings = apply_settings(strength, preserve_colors, size)
        suffix = sniff_video(video.file, "video")
        job_id = store.new_id()
        save_upload(video.file, store.folder(job_id) / f"input{suffix}")
        params = {"input": f"input{suffix}", "output": "result.mp4", "source": video.filename,
                  "filter_path": str(find_filter(filter)),
                  "settings": {"size": settings.size, "strength": settings.strength,
                               "preserve_colors": settings.preserve_colors}, "stabilize": stabilize}
        return job_view(store.create(job_id, "video", filter, params))

    @api.get("/jobs", tags=["jobs"])
    def jobs(status: str | None = None, limit: int = 100):
        """Jobs, newest first (optionally only those in one status)."""
        return [job_view(j) for j in store.list((status,) if status else None, limit=max(1, min(limit, 1000)))]

    @api.get("/jobs/{job_id}", tags=["jobs"])
    def job(job_id: str):
        """One job: status, step of total, latest loss terms, ETA, per-step history, links, log tail."""
        return job_view(get_job(job_id, history=True), detail=True)

    @api.post("/jobs/{job_id}/cancel", tags=["jobs"])
    def cancel(job_id: str):
        """Cancel a job: a queued one at once, a running one at its next step (a training checkpoint is kept)."""
        job = get_job(job_id)
        if job.status in FINISHED:
            raise HTTPException(409, f"job {job_id} is already {job.status}")
        status = store.request_cancel(job_id)
        if status == "running":
            scheduler.interrupt(job_id)
        return job_view(get_job(job_id))

    @api.get("/jobs/{job_id}/events", tags=["jobs"], response_class=StreamingResponse,
             responses={200: {"content": {"text/event-stream": {}}}})
    async def events(job_id: str, request: Request):
        """Server-sent events: a `job` event with the job and the step records added since the last event,
        whenever it changes; the stream ends when the job finishes."""
        await asyncio.to_thread(get_job, job_id)

        async def stream():
            version, sent_step = None, 0
            while True:
                job = await asyncio.to_thread(store.get, job_id, True)
                if job is None:
                    break
                if job.updated != version:
                    version = job.updated
                    view = job_view(job)
                    view["new_history"] = [h for h in job.history if h["step"] > sent_step]
                    sent_step = max([sent_step] + [h["step"] for h in job.history])
                    yield f"event: job\ndata: {json.dumps(view)}\n\n"
                if job.status in FINISHED or await request.is_disconnected():
                    break
                await asyncio.sleep(0.5)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @api.get("/jobs/{job_id}/preview", tags=["jobs"], response_class=FileResponse,
             responses={200: {"content": {"image/png": {}}}})
    def job_preview(job_id: str):
        """The latest preview of a training job: its network so far, applied to a photo."""
        path = Path(get_job(job_id).folder) / "preview.png"
        if not path.exists():
            raise HTTPException(404, "no preview yet")
        return FileResponse(path, media_type="image/png", headers={"Cache-Control": "no-store"})

    @api.get("/jobs/{job_id}/result", tags=["jobs"], response_class=FileResponse)
    def job_result(job_id: str):
        """A finished job's result: the filter file of a training job, the painted clip of a video job."""
        job = get_job(job_id)
        if job.status != "done":
            raise HTTPException(409, f"job {job_id} is {job.status}; the result exists once it is done")
        if job.kind == "train":
            try:
                path = find_filter(job.name)
            except RotoscopeError:
                raise HTTPException(410, f"the filter '{job.name}' this job made has since been deleted") from None
            return FileResponse(path, media_type="application/octet-stream", filename=path.name)
        path = Path(job.folder) / (job.result or "")
        if not path.is_file():
            raise HTTPException(410, "the result file is gone")
        return FileResponse(path, media_type="video/mp4", filename=f"{job.name}-{job.id}{path.suffix}")

    app.include_router(api)

    # ------------------------------------------------------------ the studio page

    @app.get("/", include_in_schema=False)
    def studio():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.exception_handler(RotoscopeError)
    async def rotoscope_error(_request, e: RotoscopeError):
        err = _http_error(e)
        return JSONResponse({"detail": err.detail}, status_code=err.status_code)

    return app


def serve(settings: ServerConfig, log=print) -> None:
    """Run the server (blocking) after checking that a non-loopback bind has a token."""
    import uvicorn

    if needs_token(settings.host) and not settings.token:
        raise RotoscopeError(f"binding to {settings.host} exposes the server beyond this machine: give an API token "
                             "(--token or ROTOSCOPE_TOKEN)")
    from ..devices import configure_threads, pick_device, resolve_precision

    configure_threads()
    app = create_app(settings)
    log(resolve_precision("auto", pick_device("auto")).line() + "; applies choose their engine per picture size")
    log(f"rotoscope studio on http://{settings.host}:{settings.port}/  (API docs: /docs; jobs database: "
        f"{app.state.store.db})")
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning")


__all__ = ["create_app", "serve", "needs_token"]
