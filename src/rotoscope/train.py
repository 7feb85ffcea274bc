"""Training a filter, top to bottom.

What "training" means here, step by step:
  1. start from random weights (FilterNet), gather a training set (photos) and hold some photos out;
  2. run a batch of photo crops through the network;
  3. score how badly it did: the perceptual loss (losses.py) against the artwork, measured by a fixed backbone;
  4. nudge the weights to lower the score (Adam), and repeat;
  5. every so often, score the held-out photos, which are never trained on, to see whether it generalises.

train_step() is steps 2-4, once; train() is the whole story: the setup (1), then the loop of steps and exams (5).
Everything else that watches the loop is a Monitor (TensorBoard, the pitfall guard, the story's previews,
checkpoints, the progress bar, and whatever the caller passes in); a monitor ends a run early by returning a
StopRequest (saved, resumable, like Ctrl-C) or by raising pitfalls.Stopped (back to the last good weights).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
from safetensors.torch import load_file, save_file

from . import __version__, distributed, numpy_kernels
from .backbones import load_backbone
from .config import TrainConfig, describe
from .data import PhotoSet, load_photos
from .devices import autocast, pick_device, resolve_precision
from .distributed import SINGLE, World
from .errors import Conflict, Interrupted, Invalid, RotoscopeError
from .filter import SUFFIX, Filter, check_name, registry_path, save_filter
from .images import load_rgb, resize_longer, to_tensor
from .losses import LossWeights, StyleTarget, perceptual_loss, style_target
from .network import ARCHS, FilterNet, build, count_parameters, padded_logits
from .paths import atomic_path, check_writable, runs_dir
from .truthful import audit, confidence, pitfalls, story

CHECKPOINT = "checkpoint.safetensors"


@dataclass
class Run:
    """Everything a training run produces besides the weights; saved in checkpoints and summarised in the card."""

    step: int = 0
    history: list[dict] = field(default_factory=list)  # {"step", "train": {...}, "holdout": {...}?, "lr", "grad_norm"}
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)
    holdout_start: dict | None = None  # held-out loss terms before the first step
    pitfalls: list[str] = field(default_factory=list)  # the kinds already said: a resumed run does not say them again


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
             device, precision: str, teacher=None) -> tuple[dict[str, float], float]:
    """Loss terms on the held-out photos (no gradients: an exam, not a lesson), and the peak of the paintings
    before their final sigmoid (pitfalls.droplets: a few saturated blobs hardly move the loss)."""
    net.eval()
    with torch.no_grad(), autocast(device, precision):
        photos = holdout.to(device)
        logits = padded_logits(net, photos)
        out = torch.sigmoid(logits)  # what net(photos) paints
        total, terms = perceptual_loss(backbone, target, weights, out, content_target(teacher, photos, weights))
    net.train()
    return {**terms, "total": float(total)}, float(logits.float().abs().max())


# ---------------------------------------------------------------- checkpoints: an interrupted run resumes exactly


def save_checkpoint(path: Path, net: FilterNet, opt: torch.optim.Optimizer, run: Run, cfg: TrainConfig, meta: dict):
    tensors = {f"net.{k}": v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    names = dict(net.named_parameters())
    index = {id(p): n for n, p in names.items()}
    for p, st in opt.state.items():
        for k, v in st.items():
            tensors[f"opt.{index[id(p)]}.{k}"] = torch.as_tensor(v).detach().cpu().contiguous()
    state = {"run": {"step": run.step, "history": run.history, "seconds": run.seconds, "warnings": run.warnings,
                     "holdout_start": run.holdout_start, "pitfalls": run.pitfalls},
             "config": cfg.to_dict(), "meta": meta}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"rotoscope.checkpoint": json.dumps(state)})


def checkpoint_state(path: Path) -> dict:
    """A checkpoint's run record, settings and provenance (its JSON header), without loading the tensors."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return json.loads((f.metadata() or {})["rotoscope.checkpoint"])


def require_checkpoint(name: str) -> Path:
    """The checkpoint that resuming run `name` continues from; refused in one line when there is none (callers ask
    before any work is done, so that it is the only line)."""
    path = runs_dir() / name / CHECKPOINT
    if not path.exists():
        raise RotoscopeError(f"nothing to resume: no checkpoint for '{name}' in {path.parent}")
    return path


def refuse_other_settings(name: str, path: Path, cfg: TrainConfig, artwork: str | os.PathLike | None = None) -> None:
    """A run resumed under other settings (bar RESUMABLE_CHANGES) would carry a card naming them for the whole run and
    an exam comparing scores of two recipes; a finished one would only save its weights again under a card naming
    settings they were not trained with. Refused, before any work. (Under the same settings a finished run is saved
    again as it was, as a retried server job does; an unreadable header is left to Checkpoints.resume to say.)"""
    try:
        header = checkpoint_state(path)
        done, before = int(header["run"]["step"]), TrainConfig.from_dict(header["config"])
    except Exception:  # noqa: BLE001
        return
    made_from = (header.get("meta") or {}).get("artwork_sha256")
    if artwork is not None and made_from and Path(artwork).is_file() and \
            hashlib.sha256(Path(artwork).read_bytes()).hexdigest() != made_from:  # the likelier mistake: said first
        raise RotoscopeError(f"the checkpoint of '{name}' was trained on a different artwork; --overwrite without "
                             "--resume starts afresh")
    changed = changed_settings(before, cfg)
    if changed:
        raise RotoscopeError(f"the checkpoint of '{name}' was trained with other settings ({', '.join(changed)}); "
                             "resume it with its own (more --steps may continue it), or --overwrite without "
                             "--resume to start afresh")
    if done >= cfg.steps and before.steps != cfg.steps:
        raise RotoscopeError(f"nothing to resume: the run of '{name}' is done (step {done}; this command trains to "
                             f"{cfg.steps}); more --steps continue it, --overwrite without --resume trains it afresh")


# what may differ between a run and its resumption: how long it trains, how often it is checked and saved, and where
# and in what number format it runs (`auto` may choose otherwise on a busier machine); the teacher as given (a path)
# and as recorded (its name) differ in words only (its card's hash is checked)
RESUMABLE_CHANGES = {"steps", "eval_every", "checkpoint_every", "checkpoint_seconds", "preview_every", "precision",
                     "device", "teacher"}


def changed_settings(before: TrainConfig, now: TrainConfig) -> list[str]:
    """'name old -> new' for each setting that differs and would change what the run learns."""
    def flat(cfg: TrainConfig) -> dict:
        d = cfg.to_dict()
        return {**{k: v for k, v in d.items() if k != "net"}, **{f"net.{k}": v for k, v in d["net"].items()}}

    a, b = flat(before), flat(now)
    return [f"{k} {a.get(k)} -> {b.get(k)}" for k in b if k not in RESUMABLE_CHANGES and a.get(k) != b.get(k)]


def load_checkpoint(path: Path, net: FilterNet, opt: torch.optim.Optimizer) -> tuple[Run, dict]:
    state = checkpoint_state(path)
    tensors = load_file(str(path))
    net.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("net.")})
    for name, p in net.named_parameters():
        st = {k.rsplit(".", 1)[1]: v for k, v in tensors.items() if k.startswith(f"opt.{name}.")}
        if st:
            opt.state[p] = st
    r = state["run"]
    return Run(r["step"], r["history"], r["seconds"], r.get("warnings", []), r.get("holdout_start"),
               r.get("pitfalls", [])), state


# ---------------------------------------------------------------- one step (2-4)


def content_target(teacher, photos: torch.Tensor, weights: LossWeights) -> torch.Tensor:
    """What the content term compares the paintings with: the photos, or the teacher filter's paintings of them."""
    if teacher is None:
        if weights.pixel:  # LossWeights.of(cfg) weighs it only with cfg.teacher: its caller forgot the teacher
            raise ValueError("a pixel term without a teacher: pass the teacher load_teacher() gives")
        return photos
    with torch.no_grad():
        return teacher(photos)


def train_step(step: int, cfg: TrainConfig, net: FilterNet, opt: torch.optim.Optimizer, scaler, data,
               backbone, target: StyleTarget, weights: LossWeights, device, world: World = SINGLE,
               teacher=None) -> dict:
    """One training step: set the learning rate, take the batch, paint it, score it, adjust the weights.

    `data` serves the crops (PhotoSet, or FixedBatch to time a step without data loading); `step` counts the steps
    done before this one. Returns the step's history record; raises pitfalls.Stopped if the loss is not finite.
    Under torchrun (`world`), `net` is the DistributedDataParallel wrapper, this rank paints its slice of the batch
    and the record holds the terms averaged over the ranks.
    """
    lr = lr_at(cfg, step)
    for group in opt.param_groups:
        group["lr"] = lr
    photos = distributed.shard(data.batch(step, cfg.batch, size_at(cfg, step), cfg.seed), world).to(device)
    photos = photos.contiguous(memory_format=torch.channels_last)
    with autocast(device, cfg.precision):
        output = net(photos)  # 2. paint
        aim = content_target(teacher, photos, weights)
        loss, terms = perceptual_loss(backbone, target, weights, output, aim,  # 3. score
                                      batch_mean=distributed.batch_mean(world), draw=step)
    # detached: Python numbers for logs, not part of the graph (and the same on every rank)
    terms = distributed.mean({**terms, "total": float(loss.detach())}, world)
    loss_value = terms.pop("total")
    if not math.isfinite(loss_value):
        raise pitfalls.Stopped(pitfalls.not_finite(step + 1, loss_value, cfg.lr))
    opt.zero_grad(set_to_none=True)  # 4. adjust (the scaler is a no-op except in fp16)
    scaler.scale(loss).backward()
    scaler.unscale_(opt)
    grad_norm = float(torch.nn.utils.clip_grad_norm_(net.parameters(), 1e3))
    scaler.step(opt)
    scaler.update()
    return {"step": step + 1, "train": {**terms, "total": loss_value}, "lr": lr, "grad_norm": grad_norm}


class FixedBatch:
    """Stands in for a PhotoSet that serves the same crops every step (to time train_step without data loading)."""

    def __init__(self, photos: torch.Tensor):
        self.photos = photos

    def batch(self, step: int, batch: int, size: int, seed: int) -> torch.Tensor:
        return self.photos


def due(cfg: TrainConfig, step: int, every: int) -> bool:
    """Whether a periodic task (evaluation, preview) falls after this step: every `every` steps, and the last."""
    return step % every == 0 or step == cfg.steps


# ---------------------------------------------------------------- monitors: what watches the loop


@dataclass
class StopRequest:
    """What a monitor's step() returns to end the run after this step, as Ctrl-C does: the checkpoint is saved and
    train() raises "interrupted at step N/M; run the same command with --resume to continue"."""

    reason: str = "stop requested"


class Monitor:
    """Something that watches a run. train() calls start(run, net) before the first step, step(record, net) after
    each step (its record already in run.history) and end(run) however the run ends. step() may return a
    StopRequest, which ends the run once every monitor has seen the step, or raise pitfalls.Stopped, which stops it
    at once and falls back to the last good weights."""

    def start(self, run: Run, net: FilterNet) -> None:
        pass

    def step(self, record: dict, net: FilterNet) -> StopRequest | None:
        return None

    def end(self, run: Run) -> None:
        pass


class TensorBoard(Monitor):
    """Logs the loss terms, learning rate and gradient norm of every step, the held-out scores and preview images."""

    def __init__(self, run_dir: Path, cfg: TrainConfig, device, data: PhotoSet, holdout: torch.Tensor | None):
        self.dir, self.cfg, self.device, self.data, self.holdout = run_dir, cfg, device, data, holdout
        self.writer = None

    def start(self, run, net):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(self.dir / "tensorboard"), purge_step=run.step or None)
        if run.step == 0 and self.holdout is not None:
            self.writer.add_images("holdout/photo", self.holdout[:4], 0)
            for k, v in run.holdout_start.items():
                self.writer.add_scalar(f"holdout/{k}", v, 0)

    def step(self, record, net):
        step, cfg = record["step"], self.cfg
        for k, v in record["train"].items():
            self.writer.add_scalar(f"train/{k}", v, step)
        self.writer.add_scalar("opt/lr", record["lr"], step)
        self.writer.add_scalar("opt/grad_norm", record["grad_norm"], step)
        for k, v in record.get("holdout", {}).items():
            self.writer.add_scalar(f"holdout/{k}", v, step)
        if due(cfg, step, cfg.preview_every):
            # no held-out photos: the step's first crop (a batch of one is the first crop of the step's batch)
            preview = self.holdout if self.holdout is not None else self.data.batch(
                step - 1, 1, size_at(cfg, step - 1), cfg.seed).contiguous(memory_format=torch.channels_last)
            with torch.no_grad(), autocast(self.device, cfg.precision):
                net.eval()
                self.writer.add_images("holdout/stylized", net(preview[:4].to(self.device)).float().cpu(), step)
                net.train()

    def end(self, run):
        if self.writer is not None:
            self.writer.close()


class Guard(Monitor):
    """Truthful training: reports pitfalls, keeps the last good weights at every evaluation, and stops the run
    (pitfalls.Stopped) when a pitfall means it must."""

    def __init__(self, cfg: TrainConfig, weights: LossWeights, data: PhotoSet, photo_audit, opt, log):
        self.cfg, self.data, self.audit, self.opt, self.log = cfg, data, photo_audit, opt, log
        self.watcher = pitfalls.Watcher(vars(weights), cfg.eval_every, cfg.lr, cfg.steps)

    def start(self, run, net):
        self.run = run
        self.watcher.seen.update(run.pitfalls)  # resumed: what the run said before is not said twice
        said = [pitfalls.Pitfall("narrow-set", 0, f"the photos (training and held out): {w}")
                for w in self.audit.warnings]
        pitfalls.report(run.warnings, self.log, said)
        pitfalls.report(run.warnings, self.log, self.watcher.start(len(self.data.train), self.audit.summary(),
                                                                      len(self.data.holdout), self.cfg.holdout))
        self.last_good = pitfalls.LastGood(net, self.opt, run.step)

    def step(self, record, net):
        if due(self.cfg, record["step"], self.cfg.eval_every):
            found = self.watcher.check(self.run.history)
            self.run.pitfalls = sorted(self.watcher.seen)
            for p in pitfalls.report(self.run.warnings, self.log, found):
                if p.stop:
                    raise pitfalls.Stopped(p)
            self.last_good.keep(net, self.opt, record["step"])

    def fall_back(self, run: Run, net: FilterNet, stopped: pitfalls.Pitfall, checkpoints: Checkpoints) -> None:
        """Back to the last good weights after a stop; the checkpoint resumes from there."""
        good = self.last_good.restore(net, self.opt)
        if good == 0:  # nothing to keep: no checkpoint either, so the retry the message advises is not refused as
            # the resumption of an "interrupted run" (and takes none of this run's warnings with it)
            checkpoints.discard()
            raise RotoscopeError(f"training stopped after step {run.step}: {stopped.message} No good weights to keep "
                                 "yet, so no filter was saved.")
        kept = Run(good, [h for h in run.history if h["step"] <= good], run.seconds, run.warnings, run.holdout_start,
                   run.pitfalls)
        checkpoints.save(kept)
        run.warnings.append(f"training stopped after step {run.step}; the filter holds the last good weights, "
                            f"from step {good}")


class Story(Monitor):
    """Paints the story's preview photo at its scheduled steps (story.Recorder)."""

    def __init__(self, recorder: story.Recorder):
        self.recorder = recorder

    def start(self, run, net):
        self.recorder.maybe_snapshot(net, run.step)

    def step(self, record, net):
        self.recorder.maybe_snapshot(net, record["step"])


class Checkpoints(Monitor):
    """Keeps run.seconds and saves a checkpoint every checkpoint_every steps; resumes a run from its checkpoint."""

    def __init__(self, path: Path, net: FilterNet, opt, cfg: TrainConfig, meta: dict, write: bool = True):
        self.path, self.net, self.opt, self.cfg, self.meta = path, net, opt, cfg, meta
        self.write = write  # False on torchrun ranks other than 0: they resume from rank 0's checkpoint

    def resume(self, name: str, log) -> Run:
        if not self.path.exists():
            raise RotoscopeError(f"nothing to resume: no checkpoint for '{name}' in {self.path.parent}")
        def unreadable(e: Exception) -> RotoscopeError:  # a truncated or foreign file: whatever the reader says
            return RotoscopeError(f"the checkpoint {self.path} cannot be read ({type(e).__name__}: "
                                  f"{str(e).splitlines()[0][:100] if str(e) else ''}); train without --resume to "
                                  "start afresh")

        try:
            meta = checkpoint_state(self.path)["meta"]  # the header first: what it was trained on
        except Exception as e:  # noqa: BLE001
            raise unreadable(e) from None
        # (another artwork, and other settings, are refused before any work: refuse_other_settings)
        if meta.get("teacher_card_hash") != self.meta.get("teacher_card_hash"):
            raise RotoscopeError(f"the checkpoint of '{name}' learned from another teacher (or none, or an earlier "
                                 f"version of it); --overwrite without --resume starts afresh")
        try:
            run, state = load_checkpoint(self.path, self.net, self.opt)
        except RuntimeError as e:  # load_state_dict: other layers or widths than this run's network
            raise RotoscopeError(f"the checkpoint of '{name}' holds another network (--arch, --channels or "
                                 f"--res-blocks differ: {str(e).splitlines()[0][:80]}); give the checkpoint's, or "
                                 "--overwrite without --resume to start afresh") from None
        except Exception as e:  # noqa: BLE001
            raise unreadable(e) from None
        if meta.get("backbone") not in (None, self.meta.get("backbone")):  # `auto` chose another loss network here
            raise RotoscopeError(f"the checkpoint of '{name}' was scored by the loss network {meta['backbone']}, this "
                                 f"run would use {self.meta.get('backbone')}; give --backbone {meta['backbone']} (its "
                                 "weights must be here), or --overwrite without --resume to start afresh")
        if meta.get("photos_sha256") not in (None, self.meta.get("photos_sha256")):
            raise RotoscopeError(f"the checkpoint of '{name}' was trained on other photos (or another held-out "
                                 "share); give it the same --photos, or --overwrite without --resume to start afresh")
        before = TrainConfig.from_dict(state["config"])  # the same bar RESUMABLE_CHANGES (refuse_other_settings)
        if before.steps != self.cfg.steps and 0 < run.step < self.cfg.steps:
            log(f"note: the learning rate's schedule now spans {self.cfg.steps} steps (it spanned {before.steps}): "
                f"it goes on at {lr_at(self.cfg, run.step):.2g}, where it was {lr_at(before, run.step):.2g}")
        log(f"resuming '{name}' at step {run.step}")
        return run

    def start(self, run, net):
        self.run, self.started = run, time.perf_counter() - run.seconds
        self.last_saved = time.perf_counter()

    def step(self, record, net):
        self.run.seconds = time.perf_counter() - self.started
        # by steps, and by time: a slow machine must not lose minutes of work to a kill before step 100
        if record["step"] % self.cfg.checkpoint_every == 0 or \
                time.perf_counter() - self.last_saved >= self.cfg.checkpoint_seconds:
            self.save(self.run)

    def save(self, run: Run) -> None:
        if self.write:
            save_checkpoint(self.path, self.net, self.opt, run, self.cfg, self.meta)
        self.last_saved = time.perf_counter()

    def discard(self) -> None:
        """No checkpoint of this run: it has nothing worth resuming."""
        if self.write:
            self.path.unlink(missing_ok=True)

    def interrupted(self, run: Run) -> RotoscopeError:
        """Save where the run stands (Ctrl-C or a StopRequest); the error to raise says how to continue."""
        run.seconds = time.perf_counter() - self.started
        self.save(run)
        return Interrupted(f"interrupted at step {run.step}/{self.cfg.steps}; run the same command with --resume "
                              "to continue")


class ProgressBar(Monitor):
    """The terminal's progress bar: step, rate, time left and the step's loss terms."""

    def __init__(self, enabled: bool, total: int):
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)

        class Rate(TextColumn):
            def render(self, task):
                from rich.text import Text
                speed = task.finished_speed or task.speed
                return Text(f"{speed:.2f} it/s" if speed else "-- it/s")

        self.total = total
        self.bar = Progress(TextColumn("step"), MofNCompleteColumn(), BarColumn(bar_width=20), Rate(""),
                            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                            TextColumn("{task.fields[info]}"), disable=not enabled, transient=False,
                            console=Console(stderr=True))  # stdout is for what a command returns

    def start(self, run, net):
        self.bar.start()
        self.task = self.bar.add_task("train", total=self.total, completed=run.step, info="")

    def step(self, record, net):
        self.bar.update(self.task, completed=record["step"], info=_terms_line(record["train"], record.get("holdout")))

    def end(self, run):
        self.bar.stop()


# ---------------------------------------------------------------- the loop


def train(artwork: str | os.PathLike, name: str, photos: str | os.PathLike | None = None,
          cfg: TrainConfig | None = None, *, title: str | None = None, backbone_weights: str | None = None,
          resume: bool = False, out: str | os.PathLike | None = None, log=print, progress: bool = True,
          extra_card: dict | None = None, monitors: Sequence[Monitor] = ()) -> Filter:
    """Train a filter from one artwork and save it to the registry (or `out`). Returns the loaded Filter.

    `monitors` watch the run after the built-in ones (see Monitor): the server follows its jobs with one, which
    stops a job with a StopRequest; benchmarks snapshot the network with one.
    """
    cfg = (cfg or TrainConfig()).validate()  # the settings table's ranges, for the API as for the CLI
    check_name(name)
    torch.manual_seed(cfg.seed)
    device = pick_device(cfg.device)
    world = distributed.setup(device)  # one process, or this rank of a torchrun
    try:
        return _train(artwork, name, photos, cfg, device, world, title=title, backbone_weights=backbone_weights,
                      resume=resume, out=out, log=log if world.main else _quiet,
                      progress=progress and world.main, extra_card=extra_card, monitors=monitors)
    finally:
        distributed.teardown(world)


def _quiet(*_args, **_kwargs) -> None:
    """The log of ranks other than 0: one voice per run."""


def _train(artwork, name, photos, cfg: TrainConfig, device, world: World, *, title, backbone_weights, resume, out,
           log, progress, extra_card, monitors) -> Filter:
    distributed.check_batch(world, cfg.batch)
    precision = resolved_precision(cfg, device)
    requested, cfg = cfg.precision, cfg.replace(precision=precision.value)  # the card records what was used
    run_dir = runs_dir() / name
    dest = filter_destination(name, out)
    check_writable(dest.parent, dest)  # a folder that cannot take the filter is said now, not after the run
    # the run folder is made when there is something to keep in it (a training refused a moment later for its
    # photos left an empty one behind); until then its parent is what must take it
    check_writable(run_dir if run_dir.is_dir() else run_dir.parent, run_dir / CHECKPOINT)
    if resume:
        refuse_other_settings(name, require_checkpoint(name), cfg, artwork)
    if world.main:
        _remove_stale_temporaries(run_dir, dest)

    # 1. the artwork, the training set and the photos held out, the loss network, random weights and Adam (and the
    # teacher filter, if any: first, since a wrong name is the likeliest mistake)
    teacher, teacher_card = load_teacher(cfg, device)
    if teacher_card:  # the card and checkpoint name the teacher, never the path it was read from
        cfg = cfg.replace(teacher=teacher_card["teacher"]["name"])
    art_img = load_rgb(artwork)
    at_style_size(art_img, cfg)  # a too thin artwork is said before the photos are read
    data: PhotoSet = load_photos(photos, cfg.size, cfg.holdout, warn=log)
    if len(data.train) < 1:
        raise RotoscopeError("need at least one training photo")
    photo_audit = audit.audit_photoset(data)  # what is in the training set: stored in the card
    holdout = data.holdout_batch(cfg.size) if data.holdout else None
    backbone, target, weights = loss_network(cfg, art_img, backbone_weights, device)
    net, opt, scaler, init = new_network(cfg, device, log)
    extra_card = {"init": init, "precision": {"used": precision.value, "requested": requested, "why": precision.reason},
                  "distributed": world.card(), **teacher_card, **(extra_card or {})}
    art_hash = hashlib.sha256(Path(artwork).read_bytes()).hexdigest()
    if world.main and not resume:  # the inputs are read: only now is an earlier run's record given up
        clear_run(name)
    checkpoints = Checkpoints(run_dir / CHECKPOINT, net, opt, cfg, {"artwork_sha256": art_hash,
                                                                    "photos_sha256": data.fingerprint(),
                                                                    "backbone": backbone.name,
                                                                    **teacher_hash(teacher_card)}, write=world.main)
    run = checkpoints.resume(name, log) if resume else Run()
    log(precision.line())
    if numpy_kernels.CHOSEN:  # what the sorts of the sliced terms run on
        log(f"numpy kernels: {numpy_kernels.CHOSEN}")
    log(f"training filter '{name}' on {device} with backbone {backbone.name} "
        f"({count_parameters(net):,} parameters; {len(data.train)} training photos, {len(data.holdout)} held out)"
        + (f"; {world.size} processes ({world.backend}), {cfg.batch // world.size} crops each" if world.size > 1 else ""))
    log(describe(cfg, backbone.spec.content_layers))
    if run.step == 0 and holdout is not None:  # the untrained network's held-out score: the baseline of all later
        run.holdout_start = evaluate(net, backbone, target, weights, holdout, device, cfg.precision, teacher)[0]

    # 2-5. step after step, an exam every eval_every steps, each step shown to the monitors, until done or stopped
    # every rank runs the same monitors' decisions (guard, checkpoints); only rank 0 writes and draws
    guard = Guard(cfg, weights, data, photo_audit, opt, log)
    if world.main:
        preview, preview_name, preview_held = story.preview_photo(data, cfg.size)
        recorder = story.Recorder(run_dir, preview, preview_name, art_img, cfg.steps, preview_held)
        writers = [TensorBoard(run_dir, cfg, device, data, holdout), Story(recorder)]
    else:
        writers = []
    monitors = [*writers, guard, checkpoints, ProgressBar(progress, cfg.steps), *monitors]
    model = distributed.wrap(net, world, device)
    for m in monitors:
        m.start(run, net)
    stopped = interrupted = None
    try:
        try:
            net.train()
            while run.step < cfg.steps and not interrupted:
                record = train_step(run.step, cfg, model, opt, scaler, data, backbone, target, weights, device, world,
                                    teacher)
                run.step = record["step"]
                if holdout is not None and due(cfg, run.step, cfg.eval_every):
                    record["holdout"], record["peak"] = evaluate(net, backbone, target, weights, holdout, device,
                                                                 cfg.precision, teacher)
                run.history.append(record)
                interrupted = any([m.step(record, net) for m in monitors])  # every monitor sees the step first
        finally:
            for m in monitors:
                m.end(run)
    except KeyboardInterrupt:
        interrupted = True
    except pitfalls.Stopped as e:
        stopped = e.pitfall
        pitfalls.report(run.warnings, log, [stopped])
    if interrupted:
        raise checkpoints.interrupted(run) from None
    if stopped:
        guard.fall_back(run, net, stopped, checkpoints)
    else:
        gone = pitfalls.droplets_gone(run.history, run.warnings)
        if gone and gone not in run.warnings:
            run.warnings.append(gone)
            log(f"note: {gone}")
        checkpoints.save(run)

    def stop_error() -> RotoscopeError:
        return RotoscopeError(f"training stopped after step {run.step}: {stopped.message} The filter {dest} and the "
                              f"checkpoint hold the last good weights (step {guard.last_good.step}); "
                              f"`rotoscope explain {name}` shows what happened; with other settings, --overwrite "
                              "trains it afresh.")

    if not world.main:  # rank 0 writes the filter; the others wait for it and load the same file
        distributed.barrier(world)
        if stopped:  # every rank ends the way rank 0 does
            raise stop_error()
        from .filter import load_filter_file

        return load_filter_file(dest)
    truthful = {"audit": photo_audit.summary(),
                "confidence": confidence.reference(photo_audit, data.train_names, data.holdout_names),
                "story": recorder.card(net, art_img, holdout, run.history),
                "stopped": {"step": run.step, "kept_step": guard.last_good.step, "reason": stopped.kind}
                if stopped else None}
    card = build_card(name, cfg, backbone, art_img, artwork, art_hash, title, data, run, target,
                      {**truthful, **extra_card})
    net.eval()
    save_filter(net.to("cpu").to(memory_format=torch.contiguous_format), card, dest)
    log(f"saved filter '{name}' to {dest} ({run.step} steps in {run.seconds / 60:.1f} min)")
    distributed.barrier(world)  # the other ranks wait there for the file (before a stop's error too: else they hang)
    if stopped:
        raise stop_error()
    from .filter import load_filter_file

    return load_filter_file(dest)


def clear_run(name: str) -> None:
    """Drop the record of an earlier run of `name` (checkpoint, TensorBoard curves, previews): a fresh run, or a
    removed filter, must not show another filter's story (`explain` reads this folder)."""
    import shutil

    run_dir = runs_dir() / name
    for entry in (run_dir / CHECKPOINT, run_dir / "tensorboard", run_dir / "story"):
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        elif entry.exists() or entry.is_symlink():
            entry.unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # nothing else in it: no empty folder left behind by `rm`
        run_dir.rmdir()


def _remove_stale_temporaries(run_dir: Path, dest: Path) -> None:
    """A run killed while writing (kill -9, a power cut) leaves its temporary file beside the final name (the final
    name itself is never half-written): the next run of this name removes them."""
    import contextlib
    import glob

    stale = [*run_dir.rglob("*.partial*"),
             *dest.parent.glob(f".{glob.escape(dest.stem)}.????????.partial{glob.escape(dest.suffix)}")]
    for p in stale:
        with contextlib.suppress(OSError):
            p.unlink()


def filter_destination(name: str, out: str | os.PathLike | None = None) -> Path:
    """Where a training run writes its filter: `out`, or the registry. A filter is a file ending in .safetensors:
    never a folder, never a picture (an artwork given as -o by mistake would be overwritten)."""
    dest = Path(out) if out else registry_path(name)
    if dest.suffix != SUFFIX or dest.is_dir():
        raise Invalid(f"cannot write the filter to {dest}: a filter is a file ending in {SUFFIX}")
    return dest


def taken_by(name: str, out: str | os.PathLike | None = None) -> Path | None:
    """The filter a new one named `name` would replace: the file at its destination, or (in the registry) the
    shipped filter of that name, which a user filter would hide from every command. None: the name is free."""
    from .filter import SHIPPED_DIR

    dest = filter_destination(name, out)
    if dest.exists():
        return dest
    shipped = SHIPPED_DIR / dest.name
    return shipped if out is None and shipped.exists() else None


def refuse_taken(name: str, out: str | os.PathLike | None = None, flag: str = "--overwrite",
                 say_path: bool = True) -> Path:
    """One rule for every way a filter is made (train, train-many, mix, the API and the server): a name that is
    taken, by a filter of the user's or one that ships with rotoscope, is refused in one line unless `flag` says to
    replace it (a typo must not destroy a trained filter, nor quietly hide a shipped one). Returns the destination."""
    from .filter import SHIPPED_DIR

    taken = taken_by(name, out)
    if taken is not None and taken.parent == SHIPPED_DIR:
        raise Conflict(f"a filter named '{name}' ships with rotoscope; pass {flag} to put yours in its place"
                       + (" (the shipped one comes back when yours is removed)" if out is None else ""))
    if taken is not None:  # the server says no path of its own (say_path=False)
        raise Conflict(f"a filter named '{name}' exists{f' ({taken})' if say_path else ''}; pass {flag} to replace "
                       "it")
    return filter_destination(name, out)


def run_of(name: str) -> dict | None:
    """What the checkpoint of run `name` says of it (step, steps, finished, artwork_sha256); None without a
    readable one (an unreadable checkpoint is replaced by a fresh run, as it always has been)."""
    path = runs_dir() / name / CHECKPOINT
    if not path.exists():
        return None
    try:
        header = checkpoint_state(path)
        step, steps = int(header["run"]["step"]), int(header["config"]["steps"])
    except Exception:  # noqa: BLE001
        return None
    return {"step": step, "steps": steps, "finished": step >= steps,
            "artwork_sha256": (header.get("meta") or {}).get("artwork_sha256")}


def interrupted_run(name: str) -> tuple[int, int] | None:
    """(step reached, steps asked) of an unfinished run of `name` that --resume would continue; None if there is
    none (no checkpoint, a finished run, or a checkpoint whose header cannot be read)."""
    run = run_of(name)
    return (run["step"], run["steps"]) if run and not run["finished"] else None


def refuse_dropping_a_run(name: str, flag: str = "--overwrite", resume: str = "--resume",
                          then: str = "starts afresh") -> None:
    """A fresh run of a name whose earlier run was interrupted would start from random weights and overwrite that
    run's checkpoint: hours of training lost to a forgotten --resume. Refused unless `flag` says to start afresh."""
    kept = interrupted_run(name)
    if kept is not None:
        raise Conflict(f"an interrupted run of '{name}' is kept at step {kept[0]} of {kept[1]}: {resume} continues "
                       f"it, {flag} {then}")


def resolved_precision(cfg: TrainConfig, device):
    """What cfg.precision means on this device (`auto` picks by the machine); a RotoscopeError where it cannot run."""
    try:
        return resolve_precision(cfg.precision, device)
    except ValueError as e:
        raise RotoscopeError(str(e)) from None


def new_network(cfg: TrainConfig, device, log):
    """Random (or identity-pretrained) weights, the optimiser that will nudge them, the fp16 loss scaler, and the
    card's record of the initial weights."""
    net = build(cfg.net)
    init = init_network(net, cfg, log)
    net = net.to(device).to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    # fp16 (CUDA without bf16) needs its loss scaled so small gradients do not flush to zero; a no-op otherwise
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16")
    return net, opt, scaler, init


# the least an artwork may measure a side at its style size: the loss networks' pooling fails under 8 px, and a
# Gram matrix of a thinner strip says little of a style
MIN_STYLE_SIDE = 16


def at_style_size(art_img, cfg: TrainConfig):
    """The artwork as the loss network sees it (longer side style_size), or one line if it is too thin for it."""
    small = resize_longer(art_img, cfg.style_size)
    if min(small.size) < MIN_STYLE_SIDE:
        raise RotoscopeError(f"the artwork is {art_img.width}x{art_img.height}: at its style size ({cfg.style_size} "
                             f"px on the longer side) {small.width}x{small.height}, too thin for the loss network "
                             f"(at least {MIN_STYLE_SIDE} px a side): crop it, or raise --set style_size")
    return small


def loss_network(cfg: TrainConfig, art_img, backbone_weights: str | None, device):
    """The fixed backbone that scores the paintings, what the artwork looks like to it, and the loss weights."""
    art = to_tensor(at_style_size(art_img, cfg)).to(device)
    backbone = load_backbone(cfg.backbone, backbone_weights, device=str(device), content_layer=cfg.content_layer)
    target = style_target(backbone, art, cfg.color_match, cfg.style_match)
    weights = LossWeights.of(cfg)
    if cfg.precision == "bf16":
        # the backbone is frozen: hold its weights in bf16 once, instead of autocast re-casting them every step
        backbone.net.to(torch.bfloat16)
    return backbone, target, weights


def load_teacher(cfg: TrainConfig, device):
    """The filter whose paintings the content term aims at (cfg.teacher), frozen on the device, and what the card
    says of it (its name and hash, never the path it was read from); (None, {}) without one."""
    if not cfg.teacher:
        return None, {}
    from .filter import load_filter

    teacher = load_filter(cfg.teacher)
    net = teacher.net.to(device).to(memory_format=torch.channels_last)
    return net, {"teacher": {"name": teacher.name, "card_hash": teacher.card_hash,
                             "arch": teacher.card["architecture"].get("arch", "full")}}


def teacher_hash(teacher_card: dict) -> dict:
    """The checkpoint's record of the teacher: a resumed run must learn from the same filter."""
    return {"teacher_card_hash": teacher_card["teacher"]["card_hash"]} if teacher_card else {}


def _terms_line(train: dict, holdout: dict | None) -> str:
    s = " ".join(f"{k} {v:.3f}" for k, v in train.items() if k != "total")
    s = f"loss {train['total']:.3f} ({s})"
    if holdout:
        s += f" | held-out {holdout['total']:.3f}"
    return s


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
        "architecture": {"type": ARCHS[cfg.net.arch].__name__, **cfg.to_dict()["net"]},
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
