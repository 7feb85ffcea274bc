"""Jobs: start a training or video job, list jobs, follow one (its record, event stream, preview), fetch its
result, cancel it. Jobs are recorded in SQLite (jobs.py) and run in worker processes (runner.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import shutil
from pathlib import Path
from typing import Literal

from fastapi import APIRouter, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import FileResponse, Response, StreamingResponse

from ...config import KEEPS, TrainConfig, parse_sets
from ...errors import Conflict, Invalid, NotFound, RotoscopeError, TooLarge
from ...filter import check_name, read_card
from ..deps import SchedulerDep, SettingsDep, StoreDep, apply_settings, registry_file
from ..jobs import ACTIVE, FINISHED, MADE_FILTER, Job, JobStore
from ..runner import log_tail
from ..worker import public_error
from ..uploads import sniff_image, sniff_video, save_upload

router = APIRouter()


def job_view(job: Job, detail: bool = False) -> dict:
    d = job.to_dict()
    for k in ("pid", "heartbeat", "folder", "history", "server"):
        d.pop(k)
    d["params"] = {k: v for k, v in (d.get("params") or {}).items() if k != "filter_path"}  # a server path
    d["links"] = {"self": f"/api/jobs/{job.id}", "events": f"/api/jobs/{job.id}/events",
                  "preview": f"/api/jobs/{job.id}/preview" if job.preview_step else None,
                  "result": f"/api/jobs/{job.id}/result" if job.status == "done" else None}
    if detail:
        d["history"] = job.history
        d["log"] = public_error(log_tail(Path(job.folder), 20), job)  # the log as the client may read it
    return d


def get_job(store: JobStore, job_id: str, history: bool = False) -> Job:
    job = store.get(job_id, history=history) if job_id.isalnum() else None
    if job is None:
        raise NotFound(f"no job '{job_id}'")
    return job


@router.post("/jobs/train", status_code=202, tags=["jobs"])
def start_training(
    cfg: SettingsDep, store: StoreDep,
    artwork: UploadFile = File(..., description="The artwork whose style the filter learns."),
    name: str = Form(..., description="Name of the new filter."),
    photos: list[UploadFile] = File(default=[], description="Training photos (default: built-in sample set)."),
    title: str | None = Form(None), overwrite: bool = Form(False),
    resume: bool = Form(False, description="continue the interrupted run of this name from its checkpoint (the same "
                        "artwork, network and teacher; steps may differ)"),
    steps: int | None = Form(None), size: int | None = Form(None), batch: int | None = Form(None),
    lr: float | None = Form(None), backbone: str | None = Form(None),
    style_weight: float | None = Form(None), content_weight: float | None = Form(None),
    color_weight: float | None = Form(None), tv_weight: float | None = Form(None),
    arch: Literal["full", "lite"] | None = Form(None, description="full, or lite: a fraction of the work, for "
                                                "video and live painting"),
    channels: str | None = Form(None, description="three widths, e.g. 32,64,128"),
    res_blocks: int | None = Form(None), seed: int | None = Form(None),
    checkpoint_every: int | None = Form(None), precision: Literal["auto", "bf16", "fp16", "fp32"] | None = Form(None),
    color_match: Literal["sliced", "moments"] | None = Form(None),
    set: list[str] = Form(default=[], description="any other training setting by its name in the settings table "
                          "(config.TrainConfig), as key=value, like the CLI's --set; repeatable"),
):
    """Start training a filter from an uploaded artwork (+ optional photos). Returns the job (202)."""
    check_name(name)
    try:
        ch = tuple(int(c) for c in channels.split(",")) if channels else None
    except ValueError:
        raise Invalid("channels takes three integers, e.g. 32,64,128") from None
    explicit = dict(steps=steps, size=size, batch=batch, lr=lr, backbone=backbone, style_weight=style_weight,
                    content_weight=content_weight, color_weight=color_weight, tv_weight=tv_weight, arch=arch, channels=ch,
                    res_blocks=res_blocks, seed=seed, checkpoint_every=checkpoint_every, precision=precision,
                    color_match=color_match)
    # the settings table's names and ranges, as for the CLI and the Python API; steps also meet the server's cap
    tcfg = TrainConfig().replace(**{**explicit, **parse_sets(TrainConfig, set)}).validate()
    if tcfg.steps > cfg.max_train_steps:
        raise Invalid(f"steps must be between 1 and {cfg.max_train_steps} on this server (got {tcfg.steps})")
    if tcfg.device != "auto" and not cfg.cluster:  # a GPU this machine lacks: now, not when the job runs
        from ...devices import pick_device

        try:
            pick_device(tcfg.device)
        except RotoscopeError as e:
            raise Invalid(str(e).replace("--device ", "device=")) from None
    if tcfg.teacher:  # a registry filter by name: a request names filters, never files on the server
        try:
            registry_file(tcfg.teacher)
        except (Invalid, NotFound) as e:
            raise type(e)(f"teacher: {e}") from None
    if store.active_with_name("train", name):  # said before the uploads are read; create() checks it again
        raise Conflict(f"a job is already training '{name}'")
    from ...train import interrupted_run, refuse_dropping_a_run, refuse_taken

    if resume:  # the checkpoint's artwork, network and teacher are checked when the job runs, as train --resume does
        if interrupted_run(name) is None:
            raise Conflict(f"no interrupted run of '{name}' to continue (resume=true continues one a cancelled or "
                           "interrupted job left)")
    elif not overwrite:  # the rule train, train-many and mix keep, in the API's words and without a server path
        refuse_taken(name, flag="overwrite=true", say_path=False)
        refuse_dropping_a_run(name, flag="overwrite=true", resume="resume=true")
    art_suffix, _ = sniff_image(artwork.file, cfg.max_pixels, "artwork")
    photo_suffixes = [sniff_image(p.file, cfg.max_pixels, f"photo {p.filename}")[0] for p in photos]
    job_id = store.new_id()
    folder = store.folder(job_id)
    save_upload(artwork.file, folder / f"artwork{art_suffix}")
    for i, (p, suffix) in enumerate(zip(photos, photo_suffixes)):
        save_upload(p.file, folder / "photos" / f"{i:04d}{suffix}")
    params = {"artwork": f"artwork{art_suffix}", "title": title or Path(artwork.filename or "artwork").stem,
              "photos": len(photos), "config": tcfg.to_dict(), "resume": resume}
    job = store.create(job_id, "train", name, params, total=tcfg.steps, alone=True)
    if job is None:  # another request for the name got in between the check above and now
        shutil.rmtree(folder, ignore_errors=True)
        raise Conflict(f"a job is already training '{name}'")
    return job_view(job)


RESULT_TYPES = {".gif": "image/gif", ".webp": "image/webp"}


@router.post("/jobs/video", status_code=202, tags=["jobs"])
def start_video(cfg: SettingsDep, store: StoreDep,
                video: UploadFile = File(..., description="The clip to paint (an animated GIF or WebP comes back "
                                         "as one)."),
                filter: str = Form(..., description="Filter name."),
                strength: float = Form(1.0), preserve_colors: bool = Form(False), size: int | None = Form(None),
                stabilize: bool = Form(True, description="flicker reduction along the optical flow"),
                mask: UploadFile | None = File(None, description="where to paint, on every frame: white paints, "
                                               "black keeps the clip, grey blends (any size: resized)"),
                keep: Literal[KEEPS] | None = Form(None, description="leave the faces or people found unpainted (followed "
                                                     "from frame to frame)"),
                paint_scale: float = Form(1.0, description="paint at this share of the size, then restore the "
                                          "frame's edges by guided upsampling (0.1-1; 0.5: about 3x faster)")):
    """Paint an uploaded video as a job; download the result from the job's result link when done."""
    read_card(registry_file(check_name(filter)))  # a corrupt filter is refused now (422), not by the job later
    settings = apply_settings(cfg, strength, preserve_colors, size, paint_scale)
    suffix = sniff_video(video.file, "video")
    mask_suffix = sniff_image(mask.file, cfg.max_pixels, "mask")[0] if mask is not None else None
    job_id = store.new_id()
    folder = store.folder(job_id)
    output = f"result{suffix}" if suffix in RESULT_TYPES else "result.mp4"  # a GIF or WebP comes back as one
    params = {"input": f"input{suffix}", "output": output, "source": video.filename,
              "filter_path": str(registry_file(filter)),
              "settings": {"size": settings.size, "strength": settings.strength,
                           "preserve_colors": settings.preserve_colors, "paint_scale": settings.paint_scale,
                           **({"keep": keep} if keep else {})},
              "stabilize": stabilize,
              # the download is named after the clip, as `apply` names a folder's outputs (it was FILTER-JOBID.mp4)
              "clip": re.sub(r"[^A-Za-z0-9._-]+", "_", Path(video.filename or "").stem).strip("._")[:64]}
    if mask is not None:  # read now: a mask Pillow cannot decode is refused here (422), not by the job later
        params["mask"] = f"mask{mask_suffix}"
        check_mask(save_upload(mask.file, folder / params["mask"]))
    check_frame_pixels(save_upload(video.file, folder / f"input{suffix}"), cfg.max_pixels)
    return job_view(store.create(job_id, "video", filter, params))


def check_frame_pixels(path: Path, max_pixels: int) -> None:
    """A clip whose frames are over the server's pixel limit is refused now (413), as a picture is: a 65535x65535
    GIF of two tiny frames was queued and failed as "damaged". One that cannot be read is left to the job, which
    says why."""
    from PIL import Image

    from ...video import probe

    try:
        if path.suffix in RESULT_TYPES:  # GIF, WebP: the header says the size (Pillow decodes nothing yet)
            with Image.open(path) as im:
                w, h = im.size
        else:
            src = probe(path)
            w, h = src.width, src.height
    except (Image.DecompressionBombError, TooLarge):  # over Pillow's or rotoscope's own limit, which is higher
        w = h = None
    except (RotoscopeError, OSError, ValueError):
        return
    if w is None or w * h > max_pixels:
        shutil.rmtree(path.parent, ignore_errors=True)
        raise TooLarge(f"video: frames over the {max_pixels:,}-pixel limit" + (f" ({w}x{h})" if w else ""))


def check_mask(path: Path) -> None:
    """The uploaded mask reads as a mask (mask.read_mask), else its error, naming it "mask", never the server's
    path; a refused mask's job folder is removed."""
    from ...mask import read_mask

    try:
        read_mask(path)
    except RotoscopeError as e:
        shutil.rmtree(path.parent, ignore_errors=True)
        raise type(e)(f"mask: {str(e).replace(str(path) + ': ', '').replace(str(path), 'mask')}") from None


@router.get("/jobs", tags=["jobs"])
def jobs(store: StoreDep, status: str | None = None, limit: int = 100):
    """Jobs, newest first (optionally only those in one status)."""
    if status and status not in ACTIVE + FINISHED:  # a typo is not "no such jobs" (empty: all of them)
        raise Invalid(f"unknown status '{status}': use one of {', '.join(ACTIVE + FINISHED)}")
    return [job_view(j) for j in store.list((status,) if status else None, limit=max(1, min(limit, 1000)))]


@router.get("/jobs/{job_id}", tags=["jobs"])
def job(job_id: str, store: StoreDep):
    """One job: status, step of total, latest loss terms, ETA, per-step history, links, log tail."""
    return job_view(get_job(store, job_id, history=True), detail=True)


@router.post("/jobs/{job_id}/cancel", tags=["jobs"])
def cancel(job_id: str, store: StoreDep, scheduler: SchedulerDep):
    """Cancel a job: a queued one at once, a running one at its next step (a training checkpoint is kept)."""
    job = get_job(store, job_id)
    if job.status in FINISHED:
        raise Conflict(f"job {job_id} is already {job.status}")
    status = store.request_cancel(job_id)
    if status == "running":
        scheduler.interrupt(job_id)
    return job_view(get_job(store, job_id))


@router.get("/jobs/{job_id}/events", tags=["jobs"], response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}}}})
async def events(job_id: str, request: Request, store: StoreDep):
    """Server-sent events: a `job` event with the job and the step records added since the last event,
    whenever it changes; the stream ends when the job finishes."""
    await asyncio.to_thread(get_job, store, job_id)

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


@router.get("/jobs/{job_id}/preview", tags=["jobs"], response_class=FileResponse,
            responses={200: {"content": {"image/png": {}}}})
def job_preview(job_id: str, store: StoreDep):
    """The latest preview of a training job: its network so far, applied to a photo."""
    path = Path(get_job(store, job_id).folder) / "preview.png"
    if not path.exists():
        raise NotFound("no preview yet")
    return FileResponse(path, media_type="image/png", headers={"Cache-Control": "no-store"})


@router.get("/jobs/{job_id}/result", tags=["jobs"], response_class=FileResponse)
def job_result(job_id: str, store: StoreDep):
    """A finished job's result: the filter file of a training job, the painted clip of a video job."""
    job = get_job(store, job_id)
    if job.status != "done":
        raise Conflict(f"job {job_id} is {job.status}; the result exists once it is done")
    if job.kind == "train":
        try:
            path = registry_file(job.name)
        except RotoscopeError:
            raise HTTPException(410, f"the filter '{job.name}' this job made has since been deleted") from None
        # the bytes checked are the bytes sent (a filter is a few MB): a retraining that landed between a check of
        # the file and its opening was served
        data = path.read_bytes()
        made = Path(job.folder) / MADE_FILTER
        if made.is_file() and made.read_text().strip() != hashlib.sha256(data).hexdigest():
            raise HTTPException(410, f"the filter '{job.name}' this job made has since been replaced by another "
                                     "training of that name")
        return Response(data, media_type="application/octet-stream",
                        headers={"Content-Disposition": f'attachment; filename="{path.name}"'})
    path = Path(job.folder) / (job.result or "")
    if not path.is_file():
        raise HTTPException(410, "the result file is gone")
    clip = job.params.get("clip")
    return FileResponse(path, media_type=RESULT_TYPES.get(path.suffix, "video/mp4"),
                        filename=f"{clip}-{job.name}{path.suffix}" if clip else f"{job.name}-{job.id}{path.suffix}")
