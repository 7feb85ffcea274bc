"""The score that training lowers: a perceptual loss (Johnson et al. 2016) plus a colour term.

Every term is scale-free (a relative error against its target), so one set of weights behaves alike on
backbones whose activations differ by orders of magnitude (ImageNet VGG, HED VGG, random VGG).

  content  how far the output's backbone features are from the photo's (keeps the photo's shapes)
  style    how far the output's feature statistics are from the artwork's: its Gram matrices (which features
           fire together, wherever; "gram", Johnson et al.), or the whole distribution of its features along
           random directions ("sliced", sliced Wasserstein, Heitz et al. 2021), which also holds how strongly
           and how often each pattern fires, not only its average co-activation
  color    how far the output's pixel colours are from the artwork's (the palette): either their mean and
           covariance ("moments"), or the whole distribution ("sliced": sliced Wasserstein, Heitz et al. 2021),
           which can hold a palette of many distinct colours where moments only hold its average and spread
  tv       total variation: penalises pixel-level noise
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from .backbones import Backbone
from .config import TrainConfig

_DEFAULTS = TrainConfig()  # loss defaults are the recipe's: no private copies here


def gram(f: torch.Tensor) -> torch.Tensor:
    """Normalised Gram matrix (B, C, C): channel co-activations averaged over positions."""
    b, c, h, w = f.shape
    f = f.reshape(b, c, h * w).float()
    return f @ f.transpose(1, 2) / (h * w)


def color_stats(img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image RGB mean (B, 3) and covariance (B, 3, 3)."""
    x = img.float().flatten(2)
    mu = x.mean(2)
    d = x - mu[..., None]
    return mu, d @ d.transpose(1, 2) / x.shape[2]


COLOR_DIRECTIONS = 32  # 1-D projections of RGB for the sliced colour term; fixed, so evaluation is repeatable
COLOR_PIXELS = 4096  # pixels per image the sliced term sorts: sorting all 65k of a 256 px crop cost ~18% of a step


@lru_cache(maxsize=4)
def color_directions(k: int = COLOR_DIRECTIONS) -> torch.Tensor:
    """(3, k) unit vectors in RGB: the three axes, the grey diagonal, then fixed random ones."""
    fixed = torch.tensor([[1.0, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1]])
    rand = torch.randn(max(k - 4, 0), 3, generator=torch.Generator().manual_seed(0))
    d = torch.cat([fixed, rand])[:k]
    return (d / d.norm(dim=1, keepdim=True)).T.contiguous()


_INDEX_BITS = 29  # the low mantissa bits a float64 has beyond a float32's: free to carry an index
# what sort_last sorts with NumPy: float32, and the bf16 and fp16 that autocast's projections give (exact in float32;
# torch.sort took 143 of a 513 ms bf16 step on an AVX-512 EPYC, benchmarks/bench_train.py "torch.sort for bf16")
_NUMPY_SORTED = (torch.float32, torch.bfloat16, torch.float16)
_PARALLEL_SORT_MIN = 1 << 16  # fewer values than this sort on one thread: a thread hand-off costs more
_sort_pool: tuple[int, int, ThreadPoolExecutor] | None = None  # (pid, threads, pool): made again after a fork


def sort_rows(a: np.ndarray) -> None:
    """Sort a C-contiguous array in place along its last axis, its rows shared among torch's threads.

    NumPy sorts on one thread and lets go of the GIL while it sorts, so a training step's sorts left the other
    cores idle; rows split among threads give the same numbers (benchmarks/sort.py: "sort_last, 1 thread")."""
    global _sort_pool
    threads = 1 if a.size < _PARALLEL_SORT_MIN else min(torch.get_num_threads(), a.size // a.shape[-1])
    if threads < 2:
        a.sort(axis=-1)
        return
    if _sort_pool is None or _sort_pool[:2] != (os.getpid(), threads):
        _sort_pool = (os.getpid(), threads, ThreadPoolExecutor(threads, thread_name_prefix="rotoscope-sort"))
    list(_sort_pool[2].map(lambda rows: rows.sort(axis=-1), np.array_split(a.reshape(-1, a.shape[-1]), threads)))


def sort_last(x: torch.Tensor) -> torch.Tensor:
    """x sorted along its last axis, differentiably (the sliced terms sort every step, on both sides).

    On a CPU NumPy's vectorised sort (x86-simd-sort, Highway on Arm) beats torch.sort: 1.8x on the output's side,
    4-8x on the artwork's (benchmarks/results/sort.md), with the rows shared among torch's threads (sort_rows).
    Without a gradient the values are sorted as they are; with one, each float32 is widened to float64, whose 29
    spare low mantissa bits carry its index: one sort of plain numbers gives the permutation (distinct float32s
    are 2^29 float64 steps apart, so their order stands), and a gather carries the gradient back, as torch.sort's
    own backward does. bf16 and fp16 (the projections under autocast) are sorted as the float32s they are exactly,
    and come back in their own type."""
    if x.device.type != "cpu" or x.dtype not in _NUMPY_SORTED or x.shape[-1] > 1 << _INDEX_BITS:
        return x.sort(dim=-1).values
    exact = x.detach().float()  # float32 itself; bf16 and fp16 widened without rounding
    if not (x.requires_grad and torch.is_grad_enabled()):
        values = np.array(exact.numpy(), order="C")  # a copy, sorted in place
        sort_rows(values)
        return torch.from_numpy(values).to(x.dtype)
    n = x.shape[-1]
    wide = np.array(exact.numpy(), dtype=np.float64, order="C")
    bits = wide.view(np.int64)
    bits &= ~np.int64((1 << _INDEX_BITS) - 1)
    bits |= np.arange(n, dtype=np.int64)
    sort_rows(wide)
    order = torch.from_numpy(wide.view(np.int64) & ((1 << _INDEX_BITS) - 1))
    return torch.gather(x, -1, order)


def sorted_projections(img: torch.Tensor, dirs: torch.Tensor) -> torch.Tensor:
    """(B, k, N): every pixel's colour projected on each direction, sorted along the pixels."""
    return sort_last(dirs.T.to(img.device) @ img.float().flatten(2))


def quantiles_at(sorted_target: torch.Tensor, n: int) -> torch.Tensor:
    """(k, n): the target's sorted projections (k, M) resampled at n evenly spaced quantiles (linear)."""
    m = sorted_target.shape[-1]
    pos = ((torch.arange(n, device=sorted_target.device) + 0.5) * m / n - 0.5).clamp(0, m - 1)
    lo = pos.floor().long()
    hi = (lo + 1).clamp(max=m - 1)
    t = pos - lo
    return sorted_target[:, lo] * (1 - t) + sorted_target[:, hi] * t


def even_sample(x: torch.Tensor, n: int) -> torch.Tensor:
    """About n of the last axis's entries, every k-th with k odd (so that over a flattened feature map the sample
    falls on every column phase), or all of them when there are no more than n."""
    m = x.shape[-1]
    return x if m <= n else x[..., :: (m // n) | 1]


def sliced_color_loss(img: torch.Tensor, sorted_target: torch.Tensor, dirs: torch.Tensor) -> torch.Tensor:
    """Squared sliced Wasserstein-2 distance between each image's pixel colours and the target's, batch mean.

    Big images are judged on an even sample of their pixels: every k-th, k odd, so that over the flattened image
    the sample falls on every column phase (the network's stride-2 layers repeat every 4 pixels).
    """
    x = sorted_projections(even_sample(img.flatten(2), COLOR_PIXELS), dirs)
    return F.mse_loss(x, quantiles_at(sorted_target, x.shape[-1]).expand_as(x))


FEATURE_POSITIONS = 4096  # positions per image a sliced style layer sorts (the first layers have 16k at 256 px)


def feature_directions(channels: int, draw: int | None) -> torch.Tensor:
    """(C, C) random unit directions in a layer's feature space: fixed (draw None: evaluation is repeatable) or
    new for each training step (draw = the step, so a resumed run and every torchrun rank draw the same ones)."""
    g = torch.Generator().manual_seed(channels if draw is None else 1_000_003 * (draw + 1) + channels)
    d = torch.randn(channels, channels, generator=g)
    return d / d.norm(dim=0, keepdim=True)


def sliced_feature_loss(f: torch.Tensor, target: torch.Tensor, dirs: torch.Tensor) -> torch.Tensor:
    """Sliced Wasserstein-2 distance between the output's features (B, C, H, W) and the artwork's (C, M), each
    projected on the directions (C, K) and sorted, relative to the artwork's spread along them: 1 is 'as far as
    painting every position alike with the artwork's mean feature is'."""
    x = even_sample(f.float().flatten(2), FEATURE_POSITIONS)
    dirs = dirs.to(x.device)
    xs = sort_last(dirs.T @ x)
    with torch.no_grad():  # the artwork's side is a constant
        ts = sort_last(dirs.T @ target.float())
    return F.mse_loss(xs, quantiles_at(ts, xs.shape[-1]).expand_as(xs)) / (ts.var(dim=-1).mean() + 1e-8)


def relative_mse(x: torch.Tensor, target: torch.Tensor, eps: float = 1e-8, batch_mean=None) -> torch.Tensor:
    """Mean squared error divided by the target's mean square: 0 is perfect, 1 is 'as far as zero is'.

    `batch_mean` averages the target's mean square over the whole batch when this process holds only a slice of
    it (torchrun: distributed.py), so that the slices' losses average to the whole batch's."""
    x, target = x.float(), target.float()
    energy = target.pow(2).mean()
    if batch_mean is not None:
        energy = batch_mean(energy)
    return F.mse_loss(x, target.expand_as(x)) / (energy + eps)


def total_variation(img: torch.Tensor) -> torch.Tensor:
    return (img[..., 1:, :] - img[..., :-1, :]).abs().mean() + (img[..., :, 1:] - img[..., :, :-1]).abs().mean()


@dataclass
class StyleTarget:
    """What the artwork contributes to the loss, computed once before training."""

    grams: dict[str, torch.Tensor]
    color_mean: torch.Tensor
    color_cov: torch.Tensor
    color_match: str = _DEFAULTS.color_match
    color_sorted: torch.Tensor | None = None  # (k, M) sorted projections of the artwork's pixels ("sliced")
    temperatures: dict[str, float] | None = None  # per style layer, for backbones whose spec asks for a softmax
    features: dict[str, torch.Tensor] | None = None  # (C, M) the artwork's style features ("sliced"), else None

    @property
    def style_match(self) -> str:
        """How the style term compares: by what the target holds (a default here would follow the recipe and could
        call a Gram target sliced)."""
        return "gram" if self.features is None else "sliced"


def style_features(f: torch.Tensor, temperature: float | None) -> torch.Tensor:
    """A style layer's features as the style term (Gram or sliced) sees them: as they are, or (SWAG, Wang et al.
    2021) a softmax over channels at each position, at a temperature fixed from the artwork (the layer's std there),
    which spreads the few huge activations of a non-VGG network over the channels."""
    return f if temperature is None else torch.softmax(f.float() / temperature, dim=1)


def feature_temperatures(feats: dict[str, torch.Tensor]) -> dict[str, float]:
    """SWAG's softmax temperature per style layer: the layer's std on the reference image (the artwork)."""
    return {k: float(v.float().std()) + 1e-6 for k, v in feats.items()}


COLOR_MATCHES = ("moments", "sliced")
STYLE_MATCHES = ("gram", "sliced")


def style_target(backbone: Backbone, art: torch.Tensor, color_match: str = _DEFAULTS.color_match,
                 style_match: str = _DEFAULTS.style_match) -> StyleTarget:
    """Feature statistics (Gram matrices, or the features themselves) and colour statistics of the artwork
    (1, 3, H, W) in [0, 1]."""
    if color_match not in COLOR_MATCHES:
        raise ValueError(f"color_match must be one of {', '.join(COLOR_MATCHES)}, not '{color_match}'")
    if style_match not in STYLE_MATCHES:
        raise ValueError(f"style_match must be one of {', '.join(STYLE_MATCHES)}, not '{style_match}'")
    with torch.no_grad():
        feats = backbone(art.float(), backbone.spec.style_layers)
        mu, cov = color_stats(art)
        srt = sorted_projections(art, color_directions())[0] if color_match == "sliced" else None
        temps = feature_temperatures(feats) if backbone.spec.softmax else None
    feats = {k: style_features(v, (temps or {}).get(k)) for k, v in feats.items()}
    if style_match == "sliced":
        # an even sample of the artwork's positions, like the output's: its quantiles are re-sorted every step
        return StyleTarget({}, mu, cov, color_match, srt, temps,
                           {k: even_sample(v[0].flatten(1), FEATURE_POSITIONS) for k, v in feats.items()})
    return StyleTarget({k: gram(v) for k, v in feats.items()}, mu, cov, color_match, srt, temps)


@dataclass
class LossWeights:
    """The four terms' weights and the style layers' tilt; their defaults are TrainConfig's (config.py), the one
    place defaults live."""

    content: float = _DEFAULTS.content_weight
    style: float = _DEFAULTS.style_weight
    color: float = _DEFAULTS.color_weight
    tv: float = _DEFAULTS.tv_weight
    layer_decay: float = _DEFAULTS.style_layer_decay  # each deeper style layer's weight relative to the one before
    pixel: float = 0.0  # a teacher's term: see of()

    @classmethod
    def of(cls, cfg: TrainConfig) -> "LossWeights":
        return cls(cfg.content_weight, cfg.style_weight, cfg.color_weight, cfg.tv_weight, cfg.style_layer_decay,
                   cfg.pixel_weight if cfg.teacher else 0.0)


def layer_weights(n: int, decay: float) -> list[float]:
    """n style layers' weights, fine to broad, each `decay` times the one before, averaging 1 (so the style
    weight means the same whatever the tilt)."""
    w = [decay ** i for i in range(n)]
    return [x * n / sum(w) for x in w]


def perceptual_loss(backbone: Backbone, target: StyleTarget, weights: LossWeights, output: torch.Tensor,
                    photo: torch.Tensor, photo_feats: dict[str, torch.Tensor] | None = None, batch_mean=None,
                    draw: int | None = None):
    """Weighted total and each weighted term (detached, for logging) for a batch of outputs and their photos (the
    content target: the photos themselves, or a teacher filter's paintings of them). (`batch_mean`: see
    relative_mse; every other term is a mean of per-image terms already. `draw`: the training step, which draws
    the sliced style term's directions; None for the fixed ones of evaluation.)"""
    spec = backbone.spec
    out_feats = backbone(output, spec.style_layers + spec.content_layers)
    if photo_feats is None:
        with torch.no_grad():
            photo_feats = backbone(photo, spec.content_layers)
    content = sum(relative_mse(out_feats[k], photo_feats[k], batch_mean=batch_mean)
                  for k in spec.content_layers) / len(spec.content_layers)
    temps = target.temperatures or {}

    def style_term(k: str) -> torch.Tensor:
        f = style_features(out_feats[k], temps.get(k))
        if target.style_match == "sliced":
            return sliced_feature_loss(f, target.features[k], feature_directions(target.features[k].shape[0], draw))
        return relative_mse(gram(f), target.grams[k])

    lw = layer_weights(len(spec.style_layers), weights.layer_decay)
    style = sum(w * style_term(k) for w, k in zip(lw, spec.style_layers)) / len(spec.style_layers)
    # colours live in [0, 1] units; x10 puts a 0.1 shift of every pixel on the order of the other terms (for
    # "sliced" a uniform shift v scores |v|^2 / 3, the mean over directions, about the moments' mean term)
    if target.color_match == "sliced":
        color = 10 * sliced_color_loss(output, target.color_sorted, color_directions())
    else:
        mu, cov = color_stats(output)
        color = 10 * (F.mse_loss(mu, target.color_mean.expand_as(mu)) + F.mse_loss(cov, target.color_cov.expand_as(cov)) * 10)
    tv = total_variation(output.float())
    terms = {"content": weights.content * content, "style": weights.style * style,
             "color": weights.color * color, "tv": weights.tv * tv}
    if weights.pixel:  # only when asked: every record and card before it had four terms
        terms["pixel"] = weights.pixel * (output.float() - photo.float()).abs().mean()
    total = sum(terms.values())
    return total, {k: float(v.detach()) for k, v in terms.items()}
