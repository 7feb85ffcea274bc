"""The filter card as text: what a person reads in `rotoscope show`."""

from __future__ import annotations

from pathlib import Path

from .config import with_unrecorded


def teacher_of(card: dict) -> dict | None:
    """The card's record of the filter its student learned from (train.load_teacher), if it has one."""
    t = card.get("teacher")
    return t if isinstance(t, dict) else None


def _fmt_terms(d: dict | None) -> str:
    if not d:
        return "-"
    return "  ".join(f"{k} {v:.4f}" for k, v in d.items())


def _held_out_lines(hist: dict) -> list[str]:
    """The held-out score untrained (step 0), at the first evaluation and at the last, each with its step: a run
    shorter than eval_every has one evaluation, and 'first' and 'last' would show the same numbers as if nothing
    had been learned (cards from before the curve was kept show first and last alone)."""
    curve, start = hist.get("holdout_curve") or [], hist.get("holdout_start")
    evals = curve[1:] if start else curve
    rows = [("untrained", start, 0)] if start else []
    if evals:
        if len(evals) > 1:
            rows.append(("first", hist.get("holdout_first"), evals[0]["step"]))
        rows.append(("last", hist.get("holdout_last"), evals[-1]["step"]))
    elif not start:
        rows = [("first", hist.get("holdout_first"), None), ("last", hist.get("holdout_last"), None)]
    return [("held-out    " if i == 0 else " " * 12) + f"{label:<9} {_fmt_terms(terms)}"
            + (f"  (step {step})" if step is not None and terms else "") for i, (label, terms, step) in enumerate(rows)]


def format_mix_card(card: dict, path: Path | None = None) -> str:
    """A mix's card: its parents and weights, how they were mixed; it was never trained, so no photos or losses."""
    mix, bb = card["mix"], card.get("backbone", {})
    how = {"weights": "weights interpolated into one network",
           "outputs": "paintings of each parent blended"}.get(mix.get("method"), mix.get("method"))
    lines = [f"filter      {card.get('name')}" + (f"  ({path})" if path else ""),
             "mix of      " + "\n            ".join(f"{p['name']} x {p['weight']:g}  ({p.get('artwork')}; card "
                                                    f"{str(p.get('card_hash', ''))[:12]}…)" for p in mix["parents"]),
             f"mixed by    {how}" + ("" if mix.get("same_start") else
                                     " (the parents started from different weights: a weight mix may not blend)"),
             f"backbone    {bb.get('name')}: {backbone_about(bb)}",
             f"network     {card.get('architecture', 'each parent its own')}",
             f"created     {card.get('created', 'now (a mix spec)')} with rotoscope {card.get('rotoscope_version')}"]
    return "\n".join(lines)


def backbone_about(bb: dict) -> str:
    """What the library says today of a card's backbone: a description is the library's words about a network, not a
    fact of the training, and the one stored when a filter was trained may be older than a study that changed it
    (the card's own text is kept in the file and in --json). A backbone this version does not know: the card's."""
    from .backbones import BACKBONES

    spec = BACKBONES.get(str(bb.get("name")))
    return spec.about if spec else bb.get("about", "")


def format_card(card: dict, path: Path | None = None) -> str:
    if "mix" in card:
        return format_mix_card(card, path)
    art, bb, ph, tr = card.get("artwork", {}), card.get("backbone", {}), card.get("photos", {}), card.get("training", {})
    tr = with_unrecorded(tr) if tr else tr
    hist, tm, teacher = card.get("history", {}), card.get("timings", {}), teacher_of(card)
    lines = [f"filter      {card.get('name')}" + (f"  ({path})" if path else ""),
             f"artwork     {art.get('title')}" + (f" by {art['creator']}" if art.get("creator") else "")
             + (f", {art['year']}" if art.get("year") else ""),
             f"            sha256 {str(art.get('sha256', ''))[:16]}…  {art.get('size')}"]
    if art.get("license"):
        lines.append(f"            {art['license']}")
    lines += [f"backbone    {bb.get('name')}: {backbone_about(bb)}",
              f"            weights sha256 {str(bb.get('weights_sha256', ''))[:16]}…",
              f"network     {card.get('architecture')}",
              f"photos      {ph.get('train')} trained on, {ph.get('holdout')} held out, {ph.get('skipped', 0)} skipped"
              f"  (source: {ph.get('source')})",
              *([f"teacher     {teacher.get('name')} ({teacher.get('arch')} network; card "
                 f"{str(teacher.get('card_hash', ''))[:12]}…): its paintings were the content target"]
                if teacher else []),
              f"training    {tm.get('steps')} steps in {tm.get('seconds')} s ({tm.get('it_per_s')} it/s)",
              "            " + ", ".join(f"{k}={v}" for k, v in tr.items() if k != "net"
                                        and not (k == "pixel_weight" and not tr.get("teacher"))),
              f"train loss  {'first':<9} {_fmt_terms(hist.get('train_first'))}",
              f"            {'last':<9} {_fmt_terms(hist.get('train_last'))}",
              *_held_out_lines(hist),
              f"created     {card.get('created')} with rotoscope {card.get('rotoscope_version')}"]
    for w in card.get("warnings", []):
        lines.append(f"warning     {w}")
    return "\n".join(lines)
