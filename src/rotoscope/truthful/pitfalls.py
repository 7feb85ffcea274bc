"""The known ways training goes wrong, detected while it happens.

Each detector reads the run's history (per step: the weighted loss terms, learning rate, gradient norm; every
eval_every steps the held-out terms) and returns a Pitfall with a message a person can act on. The loop calls
`Watcher.check` at each evaluation; a pitfall is reported once, shown in the progress output and kept in the
card's warnings. Training-loss statistics use the median of the last window of steps, because one batch of
random crops is noisy (a single odd crop can triple the content term for one step).

Thresholds are heuristics, stated here so that a reader can judge them:
  overfitting      held-out total >= 10% above its best for the last two evaluations, while the training median
                   is >= 3% below what it was at the held-out best.
  diverging        training median >= 3x its best window median (climbing after progress), or >= 2x the loss
                   of the very first step (far worse than the weights it started from), or a non-finite loss.
  content-vanished content term / content weight >= 0.9 (relative error: 1.0 means the photo's features are
                   gone) and no longer falling (>= 90% of its value halfway through the run so far).
  style-absent     the style term fell by less than 10% since the first window, while it is < 15% of the score.
  dominant-term    one term is >= 85% of the score.
  droplets         the held-out paintings before their final sigmoid peak at >= 30 (the 28 shipped filters peak at
                   1.6-9.6 on four held-out photos; The Great Wave trained at lr 1e-2 at 380-460, with green blobs,
                   and the first lite design's dark drops at 40-75: quality.md, study 9c), after the warm-up,
                   unless the peak fell below 0.7 of the exam before (a healthy spike fading: The Scream 84, 54,
                   21; quality.md, "The droplets check on other artworks"); the last exam is judged regardless.
content-vanished, style-absent and dominant-term judge the score, not the picture; they and droplets wait for a
quarter of the steps (early on, an untrained network's output is all noise, so its content error is high for the
wrong reason, and a healthy run may pass through a spike).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

OVERFIT_RISE = 0.10
OVERFIT_TRAIN_FALL = 0.03
DIVERGE_FACTOR = 3.0
DIVERGE_FROM_START = 2.0
WARMUP = 0.25
CONTENT_GONE = 0.9
STYLE_STUCK = 0.9
STYLE_MINOR_SHARE = 0.15
DOMINANT_SHARE = 0.85
DROPLET_PEAK = 30.0
DROPLET_FADING = 0.7  # a peak below this share of the exam before is a spike on its way out
FEW_PHOTOS = 4  # training photos below this: an explicit pitfall (the audit warns from 8)

FLAG = {"content": "--content-weight", "style": "--style-weight", "color": "--color-weight", "tv": "--tv-weight",
        "pixel": "--set pixel_weight"}


@dataclass
class Pitfall:
    kind: str  # overfitting, diverging, not-finite, content-vanished, style-absent, dominant-term, few-photos, ...
    step: int
    message: str
    stop: bool = False  # training should stop now (diverging or non-finite)

    def line(self) -> str:
        return f"step {self.step}: {self.message}" if self.step else self.message


def window(history: list[dict], end_step: int, size: int) -> list[dict]:
    return [h for h in history if end_step - size < h["step"] <= end_step]


def median_terms(rows: list[dict]) -> dict[str, float]:
    """Median of each training term (and total) over some steps."""
    if not rows:
        return {}
    return {k: statistics.median(r["train"][k] for r in rows) for k in rows[0]["train"]}


def window_medians(history: list[dict], size: int) -> list[tuple[int, dict]]:
    """(step, median terms) for consecutive windows of `size` steps; the last may be partial."""
    if not history:
        return []
    out = []
    last = history[-1]["step"]
    end = size
    while end < last + size:
        rows = window(history, min(end, last), size)
        if rows:
            out.append((min(end, last), median_terms(rows)))
        end += size
    return out


# ---------------------------------------------------------------- the detectors


def overfitting(history: list[dict], size: int) -> Pitfall | None:
    held = [(h["step"], h["holdout"]["total"]) for h in history if "holdout" in h]
    if len(held) < 3:
        return None
    best_i = min(range(len(held) - 2), key=lambda i: held[i][1])
    best_step, best = held[best_i]
    if not all(v >= best * (1 + OVERFIT_RISE) for _, v in held[-2:]):
        return None
    now_step, now = held[-1]
    t_best = median_terms(window(history, best_step, size)).get("total")
    t_now = median_terms(window(history, now_step, size)).get("total")
    if t_best is None or t_now is None or t_now > t_best * (1 - OVERFIT_TRAIN_FALL):
        return None
    return Pitfall("overfitting", now_step,
                   f"overfitting: the held-out loss rose from {best:.3f} (step {best_step}) to {now:.3f} while the "
                   f"training loss fell from {t_best:.3f} to {t_now:.3f}: the filter is getting better at its "
                   f"training photos and worse at photos it has not seen. Train on more (and more varied) photos, "
                   f"or use fewer steps (about {best_step}).")


def diverging(history: list[dict], size: int, lr: float | None = None) -> Pitfall | None:
    wins = window_medians(history, size)
    if not wins:
        return None
    start = history[0]["train"]["total"]  # the first step's score: the starting weights' (identity or random)
    best = min(w[1]["total"] for w in wins[:-1]) if len(wins) > 1 else float("inf")
    step, now = wins[-1][0], wins[-1][1]["total"]
    hint = f" (now {lr:g}); try {lr / 10:g}" if lr else ""
    if now >= DIVERGE_FROM_START * start:
        why = f"the training loss is {now:.3f}, {now / start:.1f}x its first step's ({start:.3f})"
    elif now >= DIVERGE_FACTOR * best:
        why = f"the training loss climbed back to {now:.3f}, {now / best:.1f}x its best ({best:.3f})"
    else:
        return None
    return Pitfall("diverging", step, f"diverging: {why}. The adjustments are too big: lower the learning rate "
                   f"--lr{hint}.", stop=True)


def not_finite(step: int, value: float, lr: float | None = None) -> Pitfall:
    hint = f" (now {lr:g}); try {lr / 10:g}" if lr else ""
    return Pitfall("not-finite", step, f"the loss became {value} at step {step}: the numbers overflowed, usually "
                   f"because the steps are too big. Lower the learning rate --lr{hint}.", stop=True)


def wrong_target(history: list[dict], size: int, weights: dict[str, float], total_steps: int = 0) -> list[Pitfall]:
    """Optimising the wrong thing: one loss term swamps the others, so the content vanishes or the style never appears."""
    wins = window_medians(history, size)
    if len(wins) < 2 or wins[-1][0] < WARMUP * total_steps:
        return []
    step, now = wins[-1]
    first = wins[0][1]
    total = sum(v for k, v in now.items() if k != "total") or 1e-12
    out = []
    cw, sw = weights.get("content", 1.0), weights.get("style", 1.0)
    earlier = wins[len(wins) // 2 - (len(wins) % 2 == 0)][1].get("content", 0)  # halfway through the run so far
    if cw > 0 and now.get("content", 0) / cw >= CONTENT_GONE and now.get("content", 0) >= 0.9 * earlier:
        out.append(Pitfall("content-vanished", step,
                           f"the content is vanishing: the content error is {now['content'] / cw:.2f} (1.0 means "
                           f"nothing of the photo's shapes, or the teacher's painting's, is left); the score "
                           f"rewards style over them. "
                           f"Lower --style-weight (now {sw:g}) or raise --content-weight (now {cw:g}).",))
    if sw > 0 and "style" in now and now["style"] >= STYLE_STUCK * first["style"] \
            and now["style"] / total < STYLE_MINOR_SHARE:
        out.append(Pitfall("style-absent", step,
                           f"the style is not appearing: the style term barely moved ({first['style']:.3f} -> "
                           f"{now['style']:.3f}) and is only {100 * now['style'] / total:.0f}% of the score, so "
                           f"training mostly optimises other terms. Raise --style-weight (now {sw:g}).",))
    for k, v in now.items():
        if k != "total" and v / total >= DOMINANT_SHARE:
            others = ", ".join(FLAG[o] for o in FLAG if o != k and o in now)
            out.append(Pitfall("dominant-term", step,
                               f"one term dominates: {k} is {100 * v / total:.0f}% of the score, so training spends "
                               f"almost all its effort on {k}. Lower {FLAG.get(k, k)} (now {weights.get(k, 1):g}) "
                               f"or raise {others} if the result shows too much of it."))
    return out


def photo_set(n_train: int, audit_summary: dict | None = None, n_holdout: int | None = None,
              holdout_share: float = 0.0) -> list[Pitfall]:
    """Very few or very similar photos, or none held out although a share was asked: checked once, before the first
    step."""
    out = []
    if n_holdout == 0 and holdout_share > 0 and n_train >= 2:
        out.append(Pitfall("no-holdout", 0, f"no photo could be held out: the {n_train} photos are too few, or too "
                           f"alike (look-alikes stay on one side), for a held-out share of {holdout_share:g} to set "
                           "any apart, so nothing will tell whether the filter overfits them; add different photos."))
    if n_train < FEW_PHOTOS:
        out.append(Pitfall("few-photos", 0, f"very few photos: training on {n_train} photo"
                           f"{'s' if n_train != 1 else ''} will make a filter that knows little beyond them "
                           "(it can memorise them); add more varied photos."))
    if audit_summary:
        count = audit_summary.get("count", 0)
        dup = audit_summary.get("near_duplicate_photos", 0)
        if count >= 2 and dup >= max(1, count / 3):
            out.append(Pitfall("similar-photos", 0, f"very similar photos: {dup} of {count} photos are "
                               "near-duplicates, so the training set is smaller than it looks; add different "
                               "scenes."))
        spread = audit_summary.get("diversity", {}).get("mean_hash_distance")
        if count >= 3 and spread is not None and spread < 16:
            out.append(Pitfall("similar-photos", 0, f"very similar photos: on average they differ in only "
                               f"{spread:.0f} of 64 perceptual-hash bits (unrelated photos differ in about 32)."))
    return out


def droplets(history: list[dict], lr: float | None = None, total_steps: int = 0) -> Pitfall | None:
    """A few pixels pinned to a saturated colour: the network learned a spike that one feature map carries through
    the instance norms (the artefact StyleGAN2 traced to normalization). The loss barely sees it; the picture does.
    Judged after the warm-up like the score's pitfalls, and not while the peak is fading: healthy runs pass through
    spikes early (The Scream at 3e-3: 84 at step 100 of 500, 54 at 200, 21 at 300, 4.8 at the end; The Great Wave
    16.9 at step 100), where the Great Wave at 1e-2 stayed at hundreds. The last exam is judged whatever the trend:
    its peak is the filter's."""
    exams = [h for h in history if "peak" in h]
    if not exams:
        return None
    last = exams[-1]
    if last["peak"] < DROPLET_PEAK or last["step"] < WARMUP * total_steps:
        return None
    fading = len(exams) > 1 and last["peak"] < DROPLET_FADING * exams[-2]["peak"]
    if fading and (not total_steps or last["step"] < total_steps):
        return None
    hint = f" (now {lr:g}); try {lr / 3:g}" if lr else ""
    return Pitfall("droplets", last["step"], f"droplets: the held-out paintings peak at {last['peak']:.0f} before "
                   f"their final sigmoid (trained filters stay under 10), so some pixels are pinned to a saturated "
                   f"colour, blobs the loss barely sees. Look at the previews; lower the learning rate --lr{hint}.")


def droplets_gone(history: list[dict], warnings: list[str]) -> str | None:
    """A droplets warning the run outgrew (its last exam's peak back under DROPLET_PEAK): said at the end, so that the
    card does not describe blobs the filter no longer paints."""
    exams = [h for h in history if "peak" in h]
    if not exams or exams[-1]["peak"] >= DROPLET_PEAK or not any("droplets: the held-out" in w for w in warnings):
        return None
    return (f"droplets: gone by the last exam (step {exams[-1]['step']}: the held-out paintings peak at "
            f"{exams[-1]['peak']:.0f}, under {DROPLET_PEAK:.0f}); the earlier warning describes the run, not the "
            "filter")


class Watcher:
    """Runs every detector at each evaluation and reports each kind of pitfall once."""

    def __init__(self, weights: dict[str, float], window_steps: int, lr: float | None = None, total_steps: int = 0):
        self.weights = weights
        self.total = total_steps
        self.size = max(5, window_steps)
        self.lr = lr
        self.seen: set[str] = set()

    def _new(self, found: list[Pitfall | None]) -> list[Pitfall]:
        fresh = []
        for p in found:
            if p is not None and (p.kind not in self.seen or p.stop):
                self.seen.add(p.kind)
                fresh.append(p)
        return fresh

    def start(self, n_train: int, audit_summary: dict | None, n_holdout: int | None = None,
              holdout_share: float = 0.0) -> list[Pitfall]:
        return self._new(photo_set(n_train, audit_summary, n_holdout, holdout_share))

    def check(self, history: list[dict]) -> list[Pitfall]:
        return self._new([overfitting(history, self.size), diverging(history, self.size, self.lr),
                          *wrong_target(history, self.size, self.weights, self.total),
                          droplets(history, self.lr, self.total)])


class Stopped(Exception):
    """Raised inside the training loop when a pitfall means training must stop (diverging, non-finite loss)."""

    def __init__(self, pitfall: Pitfall):
        super().__init__(pitfall.message)
        self.pitfall = pitfall


def report(warnings: list[str], log, found: list[Pitfall]) -> list[Pitfall]:
    """Print each new pitfall and keep it in the run's warnings (which go into the card)."""
    for p in found:
        line = p.line()
        if line not in warnings:
            warnings.append(line)
            log(f"warning: {line}")
    return found


class LastGood:
    """A copy of the weights and optimiser state at the last healthy evaluation, to fall back on."""

    def __init__(self, net, opt, step: int):
        self.keep(net, opt, step)

    def keep(self, net, opt, step: int) -> None:
        self.step = step
        self.net = {k: v.detach().clone() for k, v in net.state_dict().items()}
        self.opt = {p: {k: v.detach().clone() if hasattr(v, "detach") else v for k, v in st.items()}
                    for p, st in opt.state.items()}

    def restore(self, net, opt) -> int:
        net.load_state_dict(self.net)
        opt.state.clear()
        for p, st in self.opt.items():
            opt.state[p] = st
        return self.step
