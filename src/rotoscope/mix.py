"""Mixing filters: "great-wave:0.6+starry-night:0.4", at apply time or saved as a filter of its own.

Two ways, both kept and named (`ApplySettings.mix`):

- `weights`: one network whose every weight is the weighted sum of the parents' (every shipped filter, and every
  filter trained with the default `init identity`, starts from the same identity network, so their weights stay
  close enough to interpolate). One network pass, and a mix can be saved (`rotoscope mix`). Networks of
  different shapes cannot be interpolated: refused with one line.
- `outputs`: every parent paints the picture and the paintings are blended, pixel by pixel. A pass per parent;
  any shapes mix.

Which looks better was measured (`benchmarks/mix.py`, README "Mixing filters"): the default is the winner.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .errors import Invalid
from .filter import Filter, find_filter, load_filter, save_filter
from .network import FilterNet, build, config_from_card

SPEC_RE = re.compile(r"^\s*([^:+]+?)\s*(?::\s*([^:+]*?)\s*)?$")
METHODS = ("weights", "outputs")


def is_mix(spec: str) -> bool:
    """A mix spec ("a:0.6+b:0.4", "a+b", "a:1") rather than one filter's name or path."""
    s = str(spec)
    if not ("+" in s or ":" in s):
        return False
    try:
        find_filter(s)  # a file or registry name that happens to hold '+' or ':' is that filter
        return False
    except Exception:  # noqa: BLE001 - not one filter: read it as a mix
        return True


def parse(spec: str) -> list[tuple[str, float]]:
    """"a:0.6+b:0.4" -> [("a", 0.6), ("b", 0.4)]. Weights are shares: each from 0 to 1, adding up to 1; none
    given = equal shares. One line for anything else."""
    parts = [p for p in str(spec).split("+")]
    if any(not p.strip() for p in parts):
        raise Invalid(f"cannot read the mix '{spec}': write filter:weight+filter:weight, e.g. "
                      "great-wave:0.6+starry-night:0.4")
    out: list[tuple[str, float | None]] = []
    for p in parts:
        m = SPEC_RE.match(p)
        if not m:
            raise Invalid(f"cannot read '{p.strip()}' in the mix '{spec}': write filter:weight")
        name, w = m.group(1), m.group(2)
        if w is None:
            out.append((name, None))
            continue
        try:
            x = float(w)
        except ValueError:
            raise Invalid(f"the weight of {name} in the mix is '{w}', not a number") from None
        out.append((name, x))
    return [(n, w) for n, w in zip([n for n, _ in out], shares([w for _, w in out], spec))]


def shares(weights: list[float | None], what: str = "") -> list[float]:
    """Checked mix weights: all given or none (equal shares), each from 0 to 1, adding up to 1 (within 0.001)."""
    given = [w for w in weights if w is not None]
    if not given:
        return [1.0 / len(weights)] * len(weights)
    if len(given) != len(weights):
        raise Invalid(f"give every filter of the mix a weight, or none (equal shares){_of(what)}")
    for w in given:
        if not math.isfinite(w) or not 0 <= w <= 1:
            raise Invalid(f"mix weights are shares from 0 to 1 (got {w:g}){_of(what)}")
    total = sum(given)
    if abs(total - 1) > 1e-3:
        raise Invalid(f"mix weights must add up to 1 (got {' + '.join(f'{w:g}' for w in given)} = {total:g})"
                      f"{_of(what)}")
    return [w / total for w in given]


def _of(what: str) -> str:
    return f" in '{what}'" if what else ""


def mix_name(parts: list[tuple[str, float]]) -> str:
    """A name for an unsaved mix (output file names, provenance): great-wave_0.6+starry-night_0.4."""
    return "+".join(f"{Path(n).stem if n.endswith('.safetensors') else n}_{w:g}" for n, w in parts)


def _arch(f: Filter) -> tuple:
    a = f.card.get("architecture", {})
    return a.get("arch", "full"), tuple(a.get("channels", ())), a.get("res_blocks"), a.get("kernel_outer")


def _arch_text(f: Filter) -> str:
    arch, ch, rb, k = _arch(f)
    return f"{arch} {'-'.join(map(str, ch))}, {rb} blocks, kernel {k}"


def same_shape(filters: list[Filter]) -> bool:
    return len({_arch(f) for f in filters}) == 1


def interpolate(filters: list[Filter], weights: list[float]) -> FilterNet:
    """One network, each weight the weighted sum of the parents' (the same shape, refused otherwise)."""
    if not same_shape(filters):
        a, b = next((a, b) for a in filters for b in filters if _arch(a) != _arch(b))
        raise Invalid(f"cannot mix the weights of {a.name} ({_arch_text(a)}) and {b.name} ({_arch_text(b)}): "
                      "networks of different shapes; blend their paintings instead (--mix outputs)")
    net = build(config_from_card(filters[0].card["architecture"]))
    states = [f.net.state_dict() for f in filters]
    mixed = {}
    for key, ref in states[0].items():
        if ref.is_floating_point():
            mixed[key] = sum(w * s[key].float() for w, s in zip(weights, states))
        else:  # counters (none in FilterNet today): the first parent's
            mixed[key] = ref
    net.load_state_dict(mixed)
    return net.eval().requires_grad_(False)


def mix_card(name: str, filters: list[Filter], weights: list[float], method: str) -> dict:
    """The card of a mix: its parents (name, card hash, artwork, weight) and how they were mixed."""
    from . import __version__

    titles = [f.card.get("artwork", {}).get("title") or f.name for f in filters]
    backbones = {f.card.get("backbone", {}).get("name") for f in filters}
    inits = {(f.card.get("init") or {}).get("file") for f in filters}
    card = {
        "name": name,
        "artwork": {"title": " + ".join(f"{t} {w:g}" for t, w in zip(titles, weights)),
                    "creator": " / ".join(dict.fromkeys(str(f.card.get("artwork", {}).get("creator", "?"))
                                                       for f in filters))},
        "mix": {"method": method,
                "parents": [{"name": f.name, "card_hash": f.card_hash, "weight": w, "artwork": t}
                            for f, w, t in zip(filters, weights, titles)],
                "same_start": len(inits) == 1 and None not in inits},
        "backbone": filters[0].card.get("backbone", {}) if len(backbones) == 1 else
        {"name": "mixed", "about": "parents trained with " + ", ".join(sorted(map(str, backbones)))},
        "rotoscope_version": __version__,
    }  # no creation time: an apply-time mix must hash the same on every load (resume keys, provenance)
    if method == "weights":
        card["architecture"] = dict(filters[0].card["architecture"])
        card["init"] = {"kind": "mix", "file": next(iter(inits)) if len(inits) == 1 else None}
    return card


class BlendRunner:
    """Runs every parent's runner and blends the paintings by weight; the runner interface of
    stylize.TorchRunner (call with optional frozen statistics, measure), so tiles and video work unchanged."""

    def __init__(self, runners: list, weights: list[float]):
        self.runners, self.weights = runners, weights

    def __call__(self, x: torch.Tensor, stats=None) -> torch.Tensor:
        out = None
        for i, (run, w) in enumerate(zip(self.runners, self.weights)):
            if w == 0:
                continue
            y = run(x, stats[i]) if stats is not None else run(x)
            out = y.mul_(w) if out is None else out.add_(y, alpha=w)
        return out

    def measure(self, x: torch.Tensor) -> list:
        return [run.measure(x) for run in self.runners]


@dataclass
class Blend(Filter):
    """A mix painted by blending its parents' paintings: a Filter whose `net` is the first parent's (engine
    choice), with `parts` and `weights` (stylize.make_runner gives a BlendRunner)."""

    parts: list[Filter] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)


def mix_parents_line(card: dict) -> str:
    """'great-wave 0.6 + starry-night 0.4': a mix card's parents and weights, for one line."""
    return " + ".join(f"{p['name']} {p['weight']:g}" for p in card.get("mix", {}).get("parents", []))


def load_mix(spec: str, method: str = "weights") -> Filter:
    """A mix spec as a filter ready to paint: weights interpolated (`weights`) or paintings blended
    (`outputs`). A single filter at weight 1 (or a mix whose other weights are 0) is that filter, unchanged."""
    if method not in METHODS:
        raise Invalid(f"unknown mix '{method}': use {' or '.join(METHODS)}")
    parts = parse(spec)
    filters = [load_filter(n) for n, _ in parts]  # unknown names: one line with the nearest ones
    weights = [w for _, w in parts]
    live = [(f, w) for f, w in zip(filters, weights) if w > 0]
    if len(live) == 1:
        return live[0][0]
    filters, weights = [f for f, _ in live], [w for _, w in live]
    name = mix_name([(n, w) for n, w in parts if w > 0])
    card = mix_card(name, filters, weights, method)
    if method == "weights":
        return Filter(name, card, interpolate(filters, weights))
    return Blend(name, card, filters[0].net, None, parts=filters, weights=weights)


def save_mix(parents: list[str], weights: list[float] | None, name: str, out: Path | None = None,
             overwrite: bool = False) -> Path:
    """`rotoscope mix`: the parents' weights interpolated and saved as a filter whose card names them."""
    from .filter import check_name

    check_name(name)
    if len(parents) < 2:
        raise Invalid("a mix takes two filters or more")
    if weights and len(weights) != len(parents):
        raise Invalid(f"{len(parents)} filters but {len(weights)} weights: give one weight per filter")
    ws = shares(list(weights) if weights else [None] * len(parents))
    from .train import clear_run, filter_destination, interrupted_run, refuse_dropping_a_run, refuse_taken

    # a .safetensors file: never over a picture or into a folder's name; a taken name (a shipped one too) refused,
    # and the name of an interrupted training (its --resume would later replace the mix)
    target = filter_destination(name, out) if overwrite else refuse_taken(name, out)
    if out is None and not overwrite:
        refuse_dropping_a_run(name, resume="`rotoscope train --resume`", then="drops it")
    filters = [load_filter(p) for p in parents]
    net = interpolate(filters, ws)
    target.parent.mkdir(parents=True, exist_ok=True)
    card = {**mix_card(name, filters, ws, "weights"),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    saved = save_filter(net, card, target)
    if out is None and interrupted_run(name) is not None:
        clear_run(name)  # dropped, as --overwrite said (once the mix is saved): its --resume would replace the mix
    return saved


def load_any(name: str, method: str = "weights") -> Filter:
    """A filter by name or path, or a mix spec ("a:0.6+b:0.4") painted by `method`."""
    return load_mix(name, method) if is_mix(name) else load_filter(name)


def as_filter(filt, method: str = "weights") -> Filter:
    """What the library's calls take as a filter: a Filter, or a name, path or mix spec (load_any); else one line."""
    if isinstance(filt, Filter):
        return filt
    if not isinstance(filt, (str, os.PathLike)):
        raise Invalid(f"filt must be a Filter, a filter name or a path (got {type(filt).__name__})")
    return load_any(str(filt), method)
