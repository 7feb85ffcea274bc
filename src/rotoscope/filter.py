"""The filter file: one .safetensors holding the network's weights and, in its metadata, a JSON card.

The card says what the filter is and how it was made: architecture, backbone and its weights' hash, every
training setting, the artwork's hash and title, photo counts, loss history, timings, dates, version.
Filters live in a registry folder (ROTOSCOPE_HOME/filters) or ship with the package, and are addressed by
name or by path. Nothing is ever unpickled.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .config import validate
from .errors import Invalid, NotFound, Refused, RotoscopeError
from .network import FilterNet, build, config_from_card
from .paths import atomic_path, filters_dir

FORMAT_VERSION = 1
CARD_KEY = "rotoscope.card"
SUFFIX = ".safetensors"
SHIPPED_DIR = Path(__file__).parent / "filters"
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # used with fullmatch: "^...$" also let "x" + newline by


@dataclass
class Filter:
    """A trained filter: its network (eval mode, CPU) and its card."""

    name: str
    card: dict
    net: FilterNet
    path: Path | None = None

    @functools.cached_property
    def card_hash(self) -> str:
        """Short hash of the card and the weights: names exactly which filter made an output (two filters with the
        same card but other weights, a retrained one or a file edited by hand, have different hashes)."""
        h = hashlib.sha256(json.dumps(self.card, sort_keys=True).encode())
        for k, v in sorted(self.net.state_dict().items()):
            h.update(k.encode())
            h.update(v.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
        return h.hexdigest()[:16]


# The card's top-level fields that the commands read, and the JSON types they read them as: the card is the file's
# word, so a field of another type is a corrupt card in one line, not a traceback wherever it is first read
CARD_FIELDS = {"format_version": int, "name": str, "created": str, "rotoscope_version": str, "weights_dtype": str,
               "warnings": list, "stopped": (dict, type(None)),
               **{k: dict for k in ("architecture", "artwork", "audit", "backbone", "confidence", "distributed",
                                    "history", "init", "mix", "photos", "precision", "story", "teacher", "timings",
                                    "training")}}


def _json_kind(value) -> str:
    return {bool: "boolean", int: "number", float: "number", str: "string", list: "array", dict: "object",
            type(None): "null"}.get(type(value), type(value).__name__)


def _confidence_problem(ref: dict) -> str | None:
    """What is wrong with a card's confidence statistics (truthful/confidence.py reads them on every apply), or
    None: the mean and spread one number per statistic (spreads above 0), the threshold a number."""
    def numbers(v) -> bool:
        return isinstance(v, list) and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                           and math.isfinite(x) for x in v)

    if any(k in ref for k in ("mean", "std", "stats")):
        stats = ref.get("stats")
        if not (isinstance(stats, list) and numbers(ref.get("mean")) and numbers(ref.get("std"))
                and len(ref["mean"]) == len(ref["std"]) == len(stats) and all(x > 0 for x in ref["std"])):
            return "mean and std are not one number per statistic"
    if ref.get("threshold") is not None and not numbers([ref["threshold"]]):
        return "the threshold is not a number"
    return None


def check_name(name: str) -> str:
    if not isinstance(name, str):
        raise Invalid(f"a filter name is text, not {type(name).__name__}")
    if not NAME_RE.fullmatch(name):
        raise Invalid(f"invalid filter name '{name}': use letters, digits, '.', '_' and '-' (max 64)")
    return name


def save_filter(net: FilterNet, card: dict, path: str | os.PathLike) -> Path:
    """Write weights + card atomically."""
    path = Path(path)
    card = {"format_version": FORMAT_VERSION, **card}
    state = {k: v.detach().float().contiguous().cpu() for k, v in net.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={CARD_KEY: json.dumps(card, sort_keys=True)})
    return path


def read_card(path: str | os.PathLike) -> dict:
    """The card alone (cheap: reads the header only). Refuses pickles and foreign files with one line."""
    path = Path(path)
    if path.exists() and not path.is_file():
        raise Invalid(f"{path} is not a filter file (a folder, pipe or device)")
    if not path.is_file():
        raise NotFound(f"no such filter file: {path}")
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError as e:
        raise Invalid(f"{path}: cannot read it ({e.strerror})") from None
    # safetensors: an 8-byte little-endian header length, then the JSON header. Its first byte may be anything
    # (0x80 included), so recognise safetensors first and only then look for pickle (0x80) or zip (PK) magic
    looks_safetensors = head[8:9] == b"{" and int.from_bytes(head[:8], "little") < path.stat().st_size
    if not looks_safetensors and (head[:1] == b"\x80" or head[:2] == b"PK"):
        raise Invalid(f"{path} is a pickle/torch checkpoint; rotoscope never unpickles files, it reads only "
                      "safetensors filters")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception:
        raise Invalid(f"{path} is corrupt or not a safetensors file") from None
    if CARD_KEY not in meta:
        raise Invalid(f"{path} is a safetensors file but not a rotoscope filter (no card)")
    try:
        card = json.loads(meta[CARD_KEY])
    except json.JSONDecodeError:
        raise Invalid(f"{path} has a corrupt card") from None
    if not isinstance(card, dict):
        raise Invalid(f"{path} has a corrupt card (a JSON {type(card).__name__}, not an object)")
    for key, kinds in CARD_FIELDS.items():
        if key in card and not isinstance(card[key], kinds):
            raise Invalid(f"{path} has a corrupt card ({key} is a JSON {_json_kind(card[key])})")
    problem = _confidence_problem(card.get("confidence") or {})
    if problem:
        raise Invalid(f"{path} has a corrupt card (confidence: {problem})")
    if "name" in card and not NAME_RE.fullmatch(card["name"]):
        raise Invalid(f"{path} has a corrupt card (name {card['name'][:70]!r} is not a filter name)")
    if card.get("format_version", 0) > FORMAT_VERSION:
        raise Invalid(f"{path} is filter format {card['format_version']}; this rotoscope reads up to "
                      f"{FORMAT_VERSION}: upgrade rotoscope")
    return card


def load_filter_file(path: str | os.PathLike) -> Filter:
    path = Path(path)
    card = read_card(path)
    try:
        arch = card["architecture"]
        # the card is the file's word, not ours: checked against the settings' ranges before a network is built
        # (an empty or negative width would be torch's error, a billion residual blocks a hang)
        cfg = config_from_card(arch)
        validate(cfg)
    except (KeyError, TypeError) as e:
        raise Invalid(f"{path}: weights do not match the card's architecture ({str(e).splitlines()[0]})") from None
    except Invalid as e:
        raise Invalid(f"{path} has a corrupt card (architecture: {e})") from None
    try:
        net = build(cfg)
        with safe_open(str(path), framework="pt") as f:
            state = {k: f.get_tensor(k) for k in f.keys()}
        net.load_state_dict(state)
        if not all(bool(t.isfinite().all()) for t in state.values() if t.is_floating_point()):
            # a NaN painted every pixel black (or grey, through another engine) with exit code 0
            raise Invalid(f"{path} holds weights that are not numbers (NaN or infinity): the run that wrote it "
                          "went wrong; train it again")
    except (KeyError, RuntimeError, TypeError) as e:
        if cfg.arch == "lite" and set(net.state_dict()) < set(state):  # more weights than today's LiteNet has
            raise Invalid(f"{path} is an early lite filter (instance norm in its deep layers, which painted dark "
                          f"drops): retrain it with `rotoscope train --arch lite`") from None
        raise Invalid(f"{path}: weights do not match the card's architecture ({str(e).splitlines()[0]})") from None
    net.eval().requires_grad_(False)
    return Filter(card.get("name", path.stem), card, net, path)


def registry_paths() -> dict[str, Path]:
    """Name -> file, for user filters and shipped ones (a user filter shadows a shipped one of the same name)."""
    found = {}
    for folder in (SHIPPED_DIR, filters_dir()):
        if folder.is_dir():
            for p in sorted(folder.glob(f"*{SUFFIX}")):
                if not p.name.startswith("."):
                    found[p.name[: -len(SUFFIX)]] = p
    return found


def find_filter(name_or_path: str | os.PathLike) -> Path:
    """Resolve a filter by path or registry name; an unknown name suggests the nearest ones."""
    s = str(name_or_path)
    p = Path(s)
    if p.suffix == SUFFIX or os.sep in s or p.is_file():
        if p.exists() and not p.is_file():
            raise Invalid(f"{p} is not a filter file (a folder, pipe or device)")
        if not p.is_file():
            raise NotFound(f"no such filter file: {p}")
        return p
    known = registry_paths()
    if s in known:
        return known[s]
    near = difflib.get_close_matches(s, list(known), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(near)}?" if near else ("; see `rotoscope filters`" if known else
                                                             "; none installed yet: `rotoscope train` makes one")
    raise NotFound(f"unknown filter '{s}'{hint}")


def lite_version(name: str) -> str | None:
    """The registry name of a filter's lite version (great-wave -> great-wave-lite), if one exists."""
    known = registry_paths()
    if name.endswith("-lite") and name in known:
        return name
    return f"{name}-lite" if f"{name}-lite" in known else None


def load_filter(name_or_path: str | os.PathLike) -> Filter:
    return load_filter_file(find_filter(name_or_path))


def list_filters() -> list[tuple[str, Path, dict | None]]:
    """(name, path, card or None if unreadable) for every filter in the registry."""
    out = []
    for name, path in registry_paths().items():
        try:
            out.append((name, path, read_card(path)))
        except RotoscopeError:
            out.append((name, path, None))
    return out


def remove_filter(name: str) -> Path:
    path = filters_dir() / f"{check_name(name)}{SUFFIX}"
    if not path.exists():
        if (SHIPPED_DIR / f"{name}{SUFFIX}").exists():
            raise Refused(f"'{name}' ships with rotoscope and cannot be removed")
        find_filter(name)  # raises with suggestions
    if path.exists() and not path.is_file():
        raise Refused(f"{path} is not a filter file (a folder, pipe or device): rotoscope removes only filter files")
    try:
        card = read_card(path)
    except Exception:  # noqa: BLE001 - an unreadable filter is removed all the same
        card = {}
    try:
        path.unlink()
    except OSError as e:
        from .paths import write_failure

        raise write_failure(e, path) from None
    from .train import clear_run, run_of

    # its training's record goes too (a later filter of this name must not show it as its own), but only a finished
    # run of this filter's artwork: an interrupted retraining of the name, or a run of a mix's name, is kept
    run = run_of(name)
    if run is not None and run["finished"] and run["artwork_sha256"] == (card.get("artwork") or {}).get("sha256"):
        clear_run(name)
    return path


def registry_path(name: str) -> Path:
    return filters_dir() / f"{check_name(name)}{SUFFIX}"

