"""The score that training lowers: a perceptual loss (Johnson et al. 2016) plus a colour term.

Every term is scale-free (a relative error against its target), so one set of weights behaves alike on
backbones whose activations differ by orders of magnitude (ImageNet VGG, HED VGG, random VGG).

  content  how far the output's backbone features are from the photo's (keeps the photo's shapes)
  style    how far the output's Gram matrices (which features fire together, wherever) are from the artwork's
  color    how far the output's pixel colour mean and covariance are from the artwork's (the palette)
  tv       total variation: penalises pixel-level noise
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .backbones import Backbone


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


def relative_mse(x: torch.Tensor, target: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Mean squared error divided by the target's mean square: 0 is perfect, 1 is 'as far as zero is'."""
    x, target = x.float(), target.float()
    return F.mse_loss(x, target.expand_as(x)) / (target.pow(2).mean() + eps)


def total_variation(img: torch.Tensor) -> torch.Tensor:
    return (img[..., 1:, :] - img[..., :-1, :]).abs().mean() + (img[..., :, 1:] - img[..., :, :-1]).abs().mean()


@dataclass
class StyleTarget:
    """What the artwork contributes to the loss, computed once before training."""

    grams: dict[str, torch.Tensor]
    color_mean: torch.Tensor
    color_cov: torch.Tensor


def style_target(backbone: Backbone, art: torch.Tensor) -> StyleTarget:
    """Gram matrices and colour statistics of the artwork (1, 3, H, W) in [0, 1]."""
    with torch.no_grad():
        feats = backbone(art.float(), backbone.spec.style_layers)
        mu, cov = color_stats(art)
    return StyleTarget({k: gram(v) for k, v in feats.items()}, mu, cov)


@dataclass
class LossWeights:
    content: float = 3.0
    style: float = 5.0
    color: float = 2.0
    tv: float = 0.5


def perceptual_loss(backbone: Backbone, target: StyleTarget, weights: LossWeights, output: torch.Tensor,
                    photo: torch.Tensor, photo_feats: dict[str, torch.Tensor] | None = None):
    """Weighted total and each weighted term (detached, for logging) for a batch of outputs and their photos."""
    spec = backbone.spec
    out_feats = backbone(output, spec.style_layers + spec.content_layers)
    if photo_feats is None:
        with torch.no_grad():
            photo_feats = backbone(photo, spec.content_layers)
    content = sum(relative_mse(out_feats[k], photo_feats[k]) for k in spec.content_layers) / len(spec.content_layers)
    style = sum(relative_mse(gram(out_feats[k]), target.grams[k]) for k in spec.style_layers) / len(spec.style_layers)
    mu, cov = color_stats(output)
    # colour stats live in [0, 1] units; x10 puts a 0.1 mean shift on the order of the other terms
    color = 10 * (F.mse_loss(mu, target.color_mean.expand_as(mu)) + F.mse_loss(cov, target.color_cov.expand_as(cov)) * 10)
    tv = total_variation(output.float())
    terms = {"content": weights.content * content, "style": weights.style * style,
             "color": weights.color * color, "tv": weights.tv * tv}
    total = sum(terms.values())
    return total, {k: float(v.detach()) for k, v in terms.items()}
