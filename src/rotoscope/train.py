"""Training a filter, top to bottom.

What "training" means here, step by step:
  1. start from random weights (FilterNet), gather a training set (photos) and hold some photos out;
  2. run a batch of photo crops through the network;
  3. score how badly it did: the perceptual loss (losses.py) against the artwork, measured by a fixed backbone;
  4. nudge the weights to lower the score (Adam), and repeat;
  5. every so often, score the held-out photos, which are never trained on, to see whether it generalises.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from . import __version__
from .backbones import load_backbone
from .config import TrainConfig, describe
from .data import PhotoSet, load_photos
from .devices import autocast, pick_device, resolve_precision
from .errors import RotoscopeError
from .filter import Filter, check_name, registry_path, save_filter
from .images import load_rgb, resize_longer, to_tensor
from .losses import LossWeights, StyleTarget, perceptual_loss, style_target
from .network import FilterNet, count_parameters
from .paths import atomic_path, runs_dir
from . import audit, confidence, pitfalls, story

CHECKPOINT = "checkpoint.safetensors"


@dataclass
class Run:
    """Everything a training run produces besides the weights; saved in checkpoints and summarised in the card."""

    step: int = 0
    history: list[dict] = field(default_factory=list)  # {"step", "train": {...}, "holdout": {...}?, "lr", "grad_norm"}
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)
    holdout_start: dict | None = None  # held-out loss terms before the first step


def lr_at(cfg: TrainConfig, step: int) -> float:
    """Cosine decay from lr to lr_final: big nudges first, fine ones at the end."""
    t = min(1.0, step / max(1, cfg.steps))
    return cfg.lr_final + 0.5 * (cfg.lr - cfg.lr_final) * (1 + math.cos(math.pi * t))


def size_at(cfg: TrainConfig, step: int) -> int:
    """Crop size at a step: progressive resizing (small, cheap crops first) when size_start is set."""
    if not cfg.size_start or cfg.size_start >= cfg.size:
        return cfg.size
    t = min(1.0, step / max(1.0, cfg.size_ramp * cfg.steps))
    return min(cfg.size, int(cfg.size_start + t * (cfg.size - cfg.size_start)) // 8 * 8)


def init_network(net: FilterNet, cfg: TrainConfig, log=print) -> dict:
    """Random weights, or the shipped identity-pretrained ones for this shape; returns what the card records."""
    if cfg.init == "identity":
        from .identity import load_identity

        info = load_identity(net, cfg.net)
        if info:
            return info
        log("note: no identity weights ship for this network shape; starting from random weights")
        return {"kind": "random", "note": "no identity weights ship for this network shape"}
    if cfg.init != "random":
        raise RotoscopeError(f"unknown init '{cfg.init}': use identity or random")
    return {"kind": "random"}


def evaluate(net: FilterNet, backbone, target: StyleTarget, weights: LossWeights, holdout: torch.Tensor,
             device, precision: str) -> dict[str, float]:
    """Loss terms on the held-out photos (no gradients: an exam, not a lesson)."""
    net.eval()
    with torch.no_grad(), autocast(device, precision):
        out = net(holdout.to(device))
        total, terms = perceptual_loss(backbone, target, weights, out, holdout.to(device))
    net.train()
    return {**terms, "total": float(total)}


# ---------------------------------------------------------------- checkpoints: an interrupted run resumes exactly


def save_checkpoint(path: Path, net: FilterNet, opt: torch.optim.Optimizer, run: Run, cfg: TrainConfig, meta: dict):
    tensors = {f"net.{k}": v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    names = dict(net.named_parameters())
    index = {id(p): n for n, p in names.items()}
    for p, st in opt.state.items():
        for k, v in st.items():
            tensors[f"opt.{index[id(p)]}.{k}"] = torch.as_tensor(v).detach().cpu().contiguous()
    state = {"run": {"step": run.step, "history": run.history, "seconds": run.seconds, "warnings": run.warnings,
                     "holdout_start": run.holdout_start},
             "config": cfg.to_dict(), "meta": meta}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"rotoscope.checkpoint": json.dumps(state)})


def checkpoint_state(path: Path) -> dict:
    """A checkpoint's run record, settings and provenance (its JSON header), without loading the tensors."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return json.loads((f.metadata() or {})["rotoscope.checkpoint"])


def load_checkpoint(path: Path, net: FilterNet, opt: torch.optim.Optimizer) -> tuple[Run, dict]:
    state = checkpoint_state(path)
    tensors = load_file(str(path))
    net.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("net.")})
    for name, p in net.named_parameters():
        st = {k.rsplit(".", 1)[1]: v for k, v in tensors.items() if k.startswith(f"opt.{name}.")}
        if st:
            opt.state[p] = st
    r = state["run"]
    return Run(r["step"], r["history"], r["seconds"], r.get("warnings", []), r.get("holdout_start")), state


# ---------------------------------------------------------------- the loop


def train(artwork: str | os.PathLike, name: str, photos: str | os.PathLike | None = None,
          cfg: TrainConfig | None = None, *, title: str | None = None, backbone_weights: str | None = None,
          resume: bool = False, out: str | os.PathLike | None = None, log=print, progress: bool = True,
          extra_card: dict | None = None, on_eval=None, on_step=None) -> Filter:
    """Train a filter from one artwork and save it to the registry (or `out`). Returns the loaded Filter.

    on_eval(step, net), if given, is called every eval_every steps (benchmarks snapshot the network with it).
    `on_step(record, net)`, if given, is called after every step with that step's history record and the live
    network (the server follows jobs with it); raising KeyboardInterrupt from it stops the run like Ctrl-C does.
    """
    cfg = cfg or TrainConfig()
    check_name(name)
    torch.manual_seed(cfg.seed)
    device = pick_device(cfg.device)
    try:
        precision = resolve_precision(cfg.precision, device)
    except ValueError as e:
        raise RotoscopeError(str(e)) from None
    requested, cfg = cfg.precision, cfg.replace(precision=precision.value)  # the card records what was used
    run_dir = runs_dir() / name
    ckpt_path = run_dir / CHECKPOINT

    # --- the artwork and the training set
    art_img = load_rgb(artwork)
    art = to_tensor(resize_longer(art_img, cfg.style_size)).to(device)
    data: PhotoSet = load_photos(photos, cfg.size, cfg.holdout, warn=log)
    if len(data.train) < 1:
        raise RotoscopeError("need at least one training photo")
    photo_audit = audit.audit_photoset(data)  # what is in the training set: stored in the card

    # --- the loss network and what the artwork looks like to it
    backbone = load_backbone(cfg.backbone, backbone_weights, device=str(device))
    target = style_target(backbone, art, cfg.color_match)
    weights = LossWeights(cfg.content_weight, cfg.style_weight, cfg.color_weight, cfg.tv_weight)
    if cfg.precision == "bf16":
        # the backbone is frozen: hold its weights in bf16 once, instead of autocast re-casting them every step
        backbone.net.to(torch.bfloat16)

    # --- random weights, and the optimiser that will nudge them
    net = FilterNet(cfg.net)
    extra_card = {"init": init_network(net, cfg, log),
                  "precision": {"used": precision.value, "requested": requested, "why": precision.reason},
                  **(extra_card or {})}
    net = net.to(device).to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    # fp16 (CUDA without bf16) needs its loss scaled so small gradients do not flush to zero; a no-op otherwise
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16")
    run = Run()
    art_hash = hashlib.sha256(Path(artwork).read_bytes()).hexdigest()
    meta = {"artwork_sha256": art_hash, "backbone": backbone.name}
    if resume:
        if not ckpt_path.exists():
            raise RotoscopeError(f"nothing to resume: no checkpoint for '{name}' in {run_dir}")
        run, state = load_checkpoint(ckpt_path, net, opt)
        if state["meta"].get("artwork_sha256") != art_hash:
            raise RotoscopeError(f"the checkpoint of '{name}' was trained on a different artwork; drop --resume")
        if TrainConfig.from_dict(state["config"]) != cfg:
            log("note: settings differ from the checkpoint's; continuing with the new ones")
        log(f"resuming '{name}' at step {run.step}")
    holdout = data.holdout_batch(cfg.size) if data.holdout else None

    log(precision.line())
    log(f"training filter '{name}' on {device} with backbone {backbone.name} "
        f"({count_parameters(net):,} parameters; {len(data.train)} training photos, {len(data.holdout)} held out)")
    log(describe(cfg))
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=run.step or None)
    if run.step == 0 and holdout is not None:
        writer.add_images("holdout/photo", holdout[:4], 0)
        # the untrained network's held-out score: the baseline every later score is compared with
        run.holdout_start = evaluate(net, backbone, target, weights, holdout, device, cfg.precision)
        for k, v in run.holdout_start.items():
            writer.add_scalar(f"holdout/{k}", v, 0)

    # truthful training: watch for pitfalls, keep the last good weights, record previews for the story
    watcher = pitfalls.Watcher(vars(weights), cfg.eval_every, cfg.lr, cfg.steps)
    pitfalls.report(run.warnings, log, [pitfalls.Pitfall("narrow-set", 0, f"training set: {w}")
                                        for w in photo_audit.warnings])
    pitfalls.report(run.warnings, log, watcher.start(len(data.train), photo_audit.summary()))
    preview, preview_name, preview_held = story.preview_photo(data, cfg.size)
    recorder = story.Recorder(run_dir, preview, preview_name, art_img, cfg.steps, preview_held)
    recorder.maybe_snapshot(net, run.step)
    last_good, stopped = pitfalls.LastGood(net, opt, run.step), None
    started = time.perf_counter() - run.seconds
    bar = _progress(progress, cfg.steps, run.step)
    try:
        with bar:
            task = bar.add_task("train", total=cfg.steps, completed=run.step, info="")
            net.train()
            while run.step < cfg.steps:
                step = run.step
                lr = lr_at(cfg, step)
                for group in opt.param_groups:
                    group["lr"] = lr
                photos_batch = data.batch(step, cfg.batch, size_at(cfg, step), cfg.seed).to(device)
                photos_batch = photos_batch.contiguous(memory_format=torch.channels_last)
                with autocast(device, cfg.precision):
                    output = net(photos_batch)
                    loss, terms = perceptual_loss(backbone, target, weights, output, photos_batch)
                loss_value = float(loss.detach())  # detached: a Python number for logs, not part of the graph
                if not math.isfinite(loss_value):
                    raise pitfalls.Stopped(pitfalls.not_finite(step + 1, loss_value, cfg.lr))
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.unscale_(opt)
                grad_norm = float(torch.nn.utils.clip_grad_norm_(net.parameters(), 1e3))
                scaler.step(opt)
                scaler.update()
                run.step += 1
                record = {"step": run.step, "train": {**terms, "total": loss_value}, "lr": lr, "grad_norm": grad_norm}
                for k, v in record["train"].items():
                    writer.add_scalar(f"train/{k}", v, run.step)
                writer.add_scalar("opt/lr", lr, run.step)
                writer.add_scalar("opt/grad_norm", grad_norm, run.step)
                if holdout is not None and (run.step % cfg.eval_every == 0 or run.step == cfg.steps):
                    record["holdout"] = evaluate(net, backbone, target, weights, holdout, device, cfg.precision)
                    for k, v in record["holdout"].items():
                        writer.add_scalar(f"holdout/{k}", v, run.step)
                run.history.append(record)
                if run.step % cfg.eval_every == 0 or run.step == cfg.steps:
                    for p in pitfalls.report(run.warnings, log, watcher.check(run.history)):
                        if p.stop:
                            raise pitfalls.Stopped(p)
                    last_good.keep(net, opt, run.step)
                recorder.maybe_snapshot(net, run.step)
                if on_eval is not None and (run.step % cfg.eval_every == 0 or run.step == cfg.steps):
                    on_eval(run.step, net)
                if run.step % cfg.preview_every == 0 or run.step == cfg.steps:
                    preview = holdout if holdout is not None else photos_batch[:1].float().cpu()
                    with torch.no_grad(), autocast(device, cfg.precision):
                        net.eval()
                        writer.add_images("holdout/stylized", net(preview[:4].to(device)).float().cpu(), run.step)
                        net.train()
                run.seconds = time.perf_counter() - started
                if run.step % cfg.checkpoint_every == 0:
                    save_checkpoint(ckpt_path, net, opt, run, cfg, meta)
                bar.update(task, completed=run.step, info=_terms_line(record["train"], record.get("holdout")))
                if on_step is not None:
                    on_step(record, net)
    except KeyboardInterrupt:
        run.seconds = time.perf_counter() - started
        save_checkpoint(ckpt_path, net, opt, run, cfg, meta)
        raise RotoscopeError(f"interrupted at step {run.step}/{cfg.steps}; run the same command with --resume "
                             "to continue") from None
    except pitfalls.Stopped as e:
        stopped = e.pitfall
        pitfalls.report(run.warnings, log, [stopped])
    finally:
        writer.close()
    if stopped:  # back to the last good weights; the checkpoint resumes from there
        good = last_good.restore(net, opt)
        kept = Run(good, [h for h in run.history if h["step"] <= good], run.seconds, run.warnings,
                   run.holdout_start)
        save_checkpoint(ckpt_path, net, opt, kept, cfg, meta)
        run.warnings.append(f"training stopped after step {run.step}; the filter holds the last good weights, "
                            f"from step {good}")
        if good == 0:
            raise RotoscopeError(f"training stopped after step {run.step}: {stopped.message} No good weights to keep "
                                 "yet, so no filter was saved.")
    else:
        save_checkpoint(ckpt_path, net, opt, run, cfg, meta)

    truthful = {"audit": photo_audit.summary(),
                "confidence": confidence.reference(photo_audit, data.train_names, data.holdout_names),
                "story": recorder.card(net, art_img, holdout, run.history),
                "stopped": {"step": run.step, "kept_step": last_good.step, "reason": stopped.kind} if stopped else None}
    card = build_card(name, cfg, backbone, art_img, artwork, art_hash, title, data, run, target,
                      {**truthful, **(extra_card or {})})
    dest = Path(out) if out else registry_path(name)
    net.eval()
    save_filter(net.to("cpu").to(memory_format=torch.contiguous_format), card, dest)
    log(f"saved filter '{name}' to {dest} ({run.step} steps in {run.seconds / 60:.1f} min)")
    if stopped:
        raise RotoscopeError(f"training stopped after step {run.step}: {stopped.message} The filter {dest} and the "
                             f"checkpoint hold the last good weights (step {last_good.step}); "
                             f"`rotoscope explain {name}` shows what happened.")
    from .filter import load_filter_file

    return load_filter_file(dest)


def _terms_line(train: dict, holdout: dict | None) -> str:
    s = " ".join(f"{k} {v:.3f}" for k, v in train.items() if k != "total")
    s = f"loss {train['total']:.3f} ({s})"
    if holdout:
        s += f" | held-out {holdout['total']:.3f}"
    return s


def _progress(enabled: bool, total: int, done: int):
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    class Rate(TextColumn):
        def render(self, task):
            from rich.text import Text
            speed = task.finished_speed or task.speed
            return Text(f"{speed:.2f} it/s" if speed else "-- it/s")

    return Progress(TextColumn("step"), MofNCompleteColumn(), BarColumn(bar_width=20), Rate(""),
                    TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                    disable=not enabled, transient=False)


def summarize_history(history: list[dict], points: int = 50, holdout_start: dict | None = None) -> dict:
    """A compact loss history for the card: first/last values and an evenly subsampled curve.

    holdout_start (the untrained network's held-out score, step 0) opens the held-out curve when known.
    """
    if not history:
        return {"holdout_start": holdout_start} if holdout_start else {}
    stride = max(1, len(history) // points)
    curve = [h for i, h in enumerate(history) if i % stride == 0 or i == len(history) - 1]
    held = [h for h in history if "holdout" in h]
    return {
        "train_first": history[0]["train"], "train_last": history[-1]["train"],
        "holdout_first": held[0]["holdout"] if held else None, "holdout_last": held[-1]["holdout"] if held else None,
        "curve": [{"step": h["step"], "train": round(h["train"]["total"], 5), "lr": h["lr"],
                   "grad_norm": round(h["grad_norm"], 4),
                   **({"holdout": {k: round(v, 5) for k, v in h["holdout"].items()}} if "holdout" in h else {})}
                  for h in curve],
        "holdout_start": holdout_start,
        "holdout_curve": ([{"step": 0, **{k: round(v, 5) for k, v in holdout_start.items()}}] if holdout_start else [])
        + [{"step": h["step"], **{k: round(v, 5) for k, v in h["holdout"].items()}} for h in held],
    }


def build_card(name, cfg: TrainConfig, backbone, art_img, artwork, art_hash, title, data: PhotoSet, run: Run,
               target: StyleTarget, extra: dict | None) -> dict:
    card = {
        "name": name,
        "rotoscope_version": __version__,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "architecture": {"type": "FilterNet", **cfg.to_dict()["net"]},
        "backbone": {"name": backbone.name, "weights_sha256": backbone.weights_sha256,
                     "weights_source": os.path.basename(backbone.weights_source), "about": backbone.spec.about,
                     "style_layers": list(backbone.spec.style_layers),
                     "content_layers": list(backbone.spec.content_layers)},
        "training": cfg.to_dict(),
        "artwork": {"title": title or Path(artwork).stem, "file": Path(artwork).name, "sha256": art_hash,
                    "size": list(art_img.size),
                    "palette_mean": [round(float(v), 4) for v in target.color_mean.flatten().cpu()]},
        "photos": {"source": data.source, "train": len(data.train), "holdout": len(data.holdout),
                   "holdout_names": data.holdout_names, "skipped": len(data.skipped)},
        "history": summarize_history(run.history, holdout_start=run.holdout_start),
        "timings": {"seconds": round(run.seconds, 1), "steps": run.step,
                    "it_per_s": round(run.step / run.seconds, 3) if run.seconds else None},
        "warnings": run.warnings,
    }
    if extra:
        card.update(extra)
    return card
