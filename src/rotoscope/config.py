"""Every default in one place: the training recipe and the network shape.

The CLI overrides these fields by name (nanoGPT style), every run prints them, and the filter card stores them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field


@dataclass
class NetConfig:
    """Shape of the feed-forward filter network (Johnson et al. 2016 with later fixes)."""

    channels: tuple[int, int, int] = (16, 32, 64)  # widths at full, 1/2 and 1/4 resolution
    res_blocks: int = 5
    kernel_outer: int = 9  # first and last convolution: a wide receptive field for strokes


@dataclass
class TrainConfig:
    """The training recipe. Loss weights act on scale-free losses (see losses.py), so they carry across backbones."""

    steps: int = 500  # ~12 min on 2 CPU cores with the sizes below (benchmarks/results/quality.md)
    size: int = 256  # square crop size in pixels
    size_start: int = 128  # progressive resizing: crops grow from this size to `size` (0 = off)
    size_ramp: float = 0.6  # ...over this share of the steps, then stay at `size`
    init: str = "identity"  # identity = start from the shipped identity-pretrained network (rotoscope/weights)
    batch: int = 4
    lr: float = 1e-3
    lr_final: float = 1e-4  # cosine decay from lr to lr_final over the run
    backbone: str = "auto"  # auto = vgg16 when ImageNet weights are present, else vgg16-hed, else random
    style_size: int = 384  # the artwork's longer side when its features are taken
    content_weight: float = 3.0  # 1.0 let the photo dissolve into texture on the HED backbone (our trial)
    style_weight: float = 5.0
    color_weight: float = 2.0
    color_match: str = "sliced"  # the whole palette (sliced Wasserstein), or moments: its mean + covariance only
    tv_weight: float = 0.5
    holdout: float = 0.15  # share of photos never trained on, scored every eval_every steps
    eval_every: int = 100
    checkpoint_every: int = 100
    preview_every: int = 250
    # auto: bf16 where the hardware computes it natively (AMX, AVX-512 BF16, CUDA), fp16 on CUDA without bf16, else
    # fp32 (an AVX2 CPU emulates bf16 10x slower than fp32); or bf16 / fp16 / fp32 as asked (devices.py)
    precision: str = "auto"
    device: str = "auto"
    seed: int = 0
    net: NetConfig = field(default_factory=NetConfig)

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


# settings added after filters were first shipped, and the value that cards written before them were trained with
UNRECORDED = {"color_match": "moments"}


def with_unrecorded(training: dict) -> dict:
    """A card's or checkpoint's settings, completed with what older ones did without saying (UNRECORDED)."""
    return {**UNRECORDED, **training}


def describe(cfg: TrainConfig) -> str:
    """One line per setting, for printing at the start of every run."""
    flat = cfg.to_dict()
    net = flat.pop("net")
    lines = [f"  {k:<16} {v}" for k, v in flat.items()]
    lines += [f"  net.{k:<12} {v}" for k, v in net.items()]
    return "\n".join(lines)


@dataclass
class ServerConfig:
    """`rotoscope serve`: where it listens, where jobs are recorded, and the limits every request meets."""

    host: str = "127.0.0.1"  # loopback only; any other address requires a token
    port: int = 8000
    token: str | None = None  # API token (Bearer header, or ?token= for links and event streams)
    database: str | None = None  # SQLite file or sqlite:/// URL; None = ROTOSCOPE_HOME/server/jobs.sqlite
    max_jobs: int = 1  # training and video jobs running at once, each in its own worker process
    apply_threads: int = 2  # image applies served at once, off the event loop
    max_upload_bytes: int = 32 * 2**20  # one image request (or a training request with its photos)
    max_video_bytes: int = 512 * 2**20
    max_pixels: int = 25_000_000  # per uploaded image, checked from the header before decoding
    max_output_side: int = 4096  # largest `size` an apply request may ask for
    max_train_steps: int = 20_000
    allow_url: bool = False  # apply to an image fetched by URL: off unless asked for (the server then fetches URLs)
    url_timeout: float = 10.0
    job_attempts: int = 3  # an interrupted job is resumed at most this many times, then failed


@dataclass
class VideoConfig:
    """How `rotoscope apply` renders a clip (see video.py). The CLI sets crf and stabilize; the rest are tuning."""

    crf: int = 20  # H.264 constant rate factor: 18 is visually lossless, 23 is x264's default
    preset: str = "fast"  # x264 speed/size trade-off; the filter network dominates the time anyway
    stabilize: bool = True  # flicker reduction: blend in the flow-warped previous output where flow is reliable
    blend: float = 0.8  # weight of the warped previous output on reliable pixels (0 = per-frame, naive)
    # DIS optical flow for stabilization (flow.PRESETS): "fast" renders 640x360 about 1.3x faster but left the
    # basketball clip at 0.56x the per-frame warping error, over the 0.5x target (benchmarks/results/video.md)
    flow_preset: str = "medium"
    # frames per network call (fewer when frames are large; see stylize.MAX_TILE_PIXELS); 0 = 1 on the CPU, where
    # a batch of 4 was 20% slower per frame (640x360, benchmarks/results/video.md), 4 on a GPU
    batch: int = 0
    segment_frames: int = 48  # frames per resumable segment (a multiple of batch)
    max_seconds: float | None = None  # render only the start of the clip (audio cut to match); None = all of it
    gif_max_frames: int = 1500  # animated GIF/WebP are assembled in memory: refuse longer clips
    # threads of the H.264 decoder and encoder each (0 = FFmpeg's choice, about one per core and more): they share
    # the cores with the filter network and the flow (benchmarks/results/video.md, "threads")
    codec_threads: int = 0
