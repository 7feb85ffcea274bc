"""Quality benchmark: train a filter per artwork with the default recipe, score it on photos it never saw, LOOK.

For each artwork in ../shared/data/styles (MANIFEST.csv): train with TrainConfig() (or --steps) on the content
photos minus a fixed held-out set, apply to the held-out photos, and write
  benchmarks/results/quality.md        metrics table per style (and per backbone), committed
  benchmarks/out/quality/<style>.png   contact sheet: artwork, held-out photos, results (git-ignored)
  benchmarks/out/quality/overview.png  one row per style: the latest of every style scored into this folder, by
                                       any run (each row is kept in rows/), so runs over a few styles add up
With --curve, the network is also snapshotted every --eval-every steps and each snapshot scored: quality vs
CPU minutes (benchmarks/results/quality-curve.md).

  python benchmarks/quality.py                                   # all 19 styles, default recipe (hours on 2 cores)
  python benchmarks/quality.py --styles 3 --steps 200            # reduced: say so when quoting it
  python benchmarks/quality.py --styles van_gogh --backbones vgg16-hed,random   # backbone comparison
  python benchmarks/quality.py --styles ship --ship --curve      # (re)train the filters shipped in the package
  python benchmarks/quality.py --styles poster --poster --ship   # the poster (drawn by rotoscope.demo) alone
  python benchmarks/quality.py --steps 300 --reuse-shipped       # all 19: shipped filters scored as they are,
                                                                 # the others trained for 300 steps
CPU minutes are the process's CPU time (all threads) / 2, i.e. the wall time on 2 idle cores with perfect scaling;
wall minutes are also printed (they include waiting for other people's jobs on a shared machine).
"""

from __future__ import annotations

import argparse
import copy
import csv
import datetime as dt
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import rotoscope  # noqa: E402,F401  (first: NumPy's kernels as `rotoscope train` has them, numpy_kernels.py)
import torch  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from rotoscope import metrics  # noqa: E402
from rotoscope.config import TrainConfig  # noqa: E402
from rotoscope.filter import Filter  # noqa: E402
from rotoscope.images import list_images, load_rgb, resize_longer  # noqa: E402
from rotoscope.stylize import ApplySettings, stylize_image  # noqa: E402
from rotoscope.train import Monitor, due, train  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
if not SHARED.exists():
    SHARED = Path("/work/shared/data")
# Fixed held-out photos, never trained on: a face, fog, fur, machines, street, flowers, dusk city, a lighthouse.
HOLDOUT = ("portrait_smiling_woman.png", "golden_gate_bridge_fog.jpg", "tabby_cat.jpg", "kodim05.png",
           "new_york_taxis.jpg", "wildflowers.jpg", "city_skyline_dusk.jpg", "kodim19.png")
# Shipped filters (--ship): name -> artwork, varied on purpose (swirls, a flat woodblock print, expressionist colour,
# abstraction, pointillism, stained glass, a monochrome etching). `--styles ship` picks exactly these.
SHIPPED = {
    "starry-night": "van_gogh_starry_night.jpg",
    "great-wave": "hokusai_great_wave.jpg",
    "the-scream": "munch_the_scream.jpg",
    "composition-vii": "kandinsky_composition_vii.jpg",
    "la-calanque": "signac_la_calanque.jpg",
    "hibiscus-parrots": "tiffany_hibiscus_and_parrots.png",
    "carceri": "piranesi_carceri_etching.png",
    "rob-roy": "dalziel_rob_roy_crypt_wood_engraving.png",
    "grande-jatte": "seurat_grande_jatte.jpg",
    "the-kiss": "klimt_the_kiss.jpg",
    "impression-sunrise": "monet_impression_sunrise.jpg",
    "te-fare": "gauguin_te_fare.jpg",
    "harvesters": "bruegel_the_harvesters.jpg",
    "poster": "rotoscope_poster.png",  # drawn by rotoscope.demo.draw_poster (--poster), also the demo's artwork
}
POSTER = "rotoscope_poster.png"
POSTER_ROW = {"file": f"styles/{POSTER}", "kind": "style", "title": "Constructivist poster (drawn by code)",
              "creator": "rotoscope (rotoscope.demo.draw_poster)", "year": "2026", "source_repo": "rotoscope",
              "source_path": "src/rotoscope/demo.py", "license_basis": "drawn by the project's own code"}


def art_file(style: str, tmp: Path) -> Path:
    """Where a style's artwork is: the shared file, or the poster drawn into the run's temporary folder."""
    if style != POSTER:
        return SHARED / "styles" / style
    path = tmp / POSTER
    if not path.exists():
        from rotoscope.demo import draw_poster

        draw_poster().save(path)
    return path
SHEET_PHOTOS = 4  # held-out photos shown per contact sheet row
THUMB = 200


def manifest() -> dict[str, dict]:
    """styles/<file> -> its MANIFEST row (title, creator, year, license_basis)."""
    rows = {}
    with open(SHARED / "MANIFEST.csv", newline="") as f:
        for r in csv.DictReader(f):
            if r["kind"] == "style":
                rows[Path(r["file"]).name] = r
    return rows


def pick_styles(spec: str | None, all_styles: list[str]) -> list[str]:
    if not spec:
        return all_styles
    if spec == "ship":
        return [s for s in SHIPPED.values() if s in all_styles]
    if spec == "poster":  # none of the shared artworks: with --poster, the poster alone
        return []
    if spec.isdigit():  # the first N, spread over the list so a reduced run still covers varied styles
        n = int(spec)
        return [all_styles[round(i * (len(all_styles) - 1) / max(1, n - 1))] for i in range(n)] if n > 1 else all_styles[:1]
    picked = [s for s in all_styles if any(part and part in s for part in spec.split(","))]
    if not picked:
        raise SystemExit(f"no style matches {spec!r}")
    return picked


def train_folder(tmp: Path) -> Path:
    """The content photos minus the held-out ones, as symlinks (the shared data is never copied)."""
    folder = tmp / "train-photos"
    folder.mkdir()
    for p in list_images(SHARED / "content"):
        if p.name not in HOLDOUT:
            (folder / p.name).symlink_to(p)
    return folder


def ship(trained: Path, name: str, row: dict, dest: Path, tmp: Path | None = None) -> Path:
    """Rewrite a trained filter for the package: fp16 weights, the artwork's provenance, no local paths (`tmp`:
    the run's temporary folder, where its training photos were linked; default: the filter's own folder).

    Weights only: the artwork image never enters the package. Loading converts fp16 back to fp32.
    """
    from safetensors.torch import save_file

    from rotoscope.filter import CARD_KEY, load_filter_file
    from rotoscope.paths import atomic_path

    filt = load_filter_file(trained)
    card = dict(filt.card)
    card["name"] = name
    card["artwork"] = {**card["artwork"], "title": row["title"], "creator": row["creator"], "year": row["year"],
                       "license": row["license_basis"], "source": f"{row['source_repo']}/{row['source_path']}"}
    card["photos"] = {**card["photos"], "source": f"../shared/data/content minus the {len(HOLDOUT)} photos held out "
                      "by benchmarks/quality.py"}
    card["weights_dtype"] = "float16"
    card = scrub_paths(card, tmp or trained.parent)
    if card.get("audit"):
        card["audit"] = {**card["audit"], "source": card["photos"]["source"]}
    if card.get("story"):
        card["story"] = {**card["story"], "run_dir": None}  # the run folder stays on the machine that trained it
    state = {k: v.detach().half().contiguous() for k, v in filt.net.state_dict().items()}
    with atomic_path(dest) as tmp:
        save_file(state, str(tmp), metadata={CARD_KEY: json.dumps(card, sort_keys=True)})
    return dest


def shipped_name(name: str, cfg: TrainConfig) -> str:
    """A shipped filter's name for this architecture: great-wave (full) or great-wave-lite."""
    return name if cfg.net.arch == "full" else f"{name}-{cfg.net.arch}"


def shipped_filter(name: str | None, cfg: TrainConfig) -> Filter | None:
    """The package's filter of that name (and the config's architecture), if it is installed, loads with today's
    network and was trained with the config's backbone."""
    from rotoscope.filter import SHIPPED_DIR, load_filter_file

    if not name:
        return None
    path = SHIPPED_DIR / f"{shipped_name(name, cfg)}.safetensors"
    if not path.exists():
        return None
    from rotoscope.backbones import resolve_name

    from rotoscope.errors import RotoscopeError

    try:
        filt = load_filter_file(path)
    except RotoscopeError:  # a file of an earlier network design (e.g. the first lite): train it afresh
        return None
    return filt if filt.card["backbone"]["name"] == resolve_name(cfg.backbone) else None


def scrub_paths(card: dict, tmp: Path) -> dict:
    """The card without this machine's temporary folders (the training photos' symlink folder, the run dir)."""
    text = json.dumps(card)
    text = text.replace(json.dumps(str(tmp / "train-photos"))[1:-1], "../shared/data/content minus the held-out photos")
    text = text.replace(json.dumps(str(tmp))[1:-1], "<benchmark temp folder>")
    return json.loads(text)


def stylize_all(filt: Filter, photos: list[tuple[str, Image.Image]], size: int) -> list[Image.Image]:
    settings = ApplySettings(size=size, device="cpu")
    return [stylize_image(filt, img, settings) for _, img in photos]


def net_as_filter(net, card) -> Filter:
    from rotoscope.network import build, config_from_card

    fresh = build(config_from_card(card["architecture"]))
    fresh.load_state_dict(net)
    return Filter("snapshot", card, fresh.eval().requires_grad_(False))


class Snapshots(Monitor):
    """Copies the network at every held-out evaluation (every eval_every steps and the last) with the CPU minutes
    (of 2 cores) spent so far: the points of the quality curve."""

    def __init__(self, cfg: TrainConfig, snaps: list, cpu0: float):
        self.cfg, self.snaps, self.cpu0 = cfg, snaps, cpu0

    def step(self, record, net):
        if due(self.cfg, record["step"], self.cfg.eval_every):
            self.snaps.append((record["step"], (time.process_time() - self.cpu0) / 2 / 60,
                               copy.deepcopy(net.state_dict())))


def thumb(img: Image.Image, h: int = THUMB) -> Image.Image:
    return img.resize((max(1, round(img.width * h / img.height)), h), Image.LANCZOS)


def row_image(images: list[Image.Image], label: str, h: int = THUMB) -> Image.Image:
    thumbs = [thumb(i.convert("RGB"), h) for i in images]
    w = sum(t.width for t in thumbs) + 4 * (len(thumbs) + 1)
    row = Image.new("RGB", (w, h + 22), "white")
    ImageDraw.Draw(row).text((4, 4), label, fill="black")
    x = 4
    for t in thumbs:
        row.paste(t, (x, 20))
        x += t.width + 4
    return row


def stack(rows: list[Image.Image]) -> Image.Image:
    sheet = Image.new("RGB", (max(r.width for r in rows), sum(r.height for r in rows)), "white")
    y = 0
    for r in rows:
        sheet.paste(r, (0, y))
        y += r.height
    return sheet


def fmt(v: float) -> str:
    return "-" if v != v else f"{v:.3f}"  # NaN: not measured in this run


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--styles", default=None, help="N (spread over the list) or comma-separated name parts")
    ap.add_argument("--steps", type=int, default=None, help="training steps per filter (default: TrainConfig's)")
    ap.add_argument("--backbones", default=None, help="comma-separated, e.g. vgg16-hed,random (default: auto)")
    ap.add_argument("--variants", default=None,
                    help='JSON {label: TrainConfig overrides}, each trained per style, e.g. '
                         '\'{"hed": {"backbone": "vgg16-hed"}, "wide": {"channels": [32, 64, 128]}}\'; '
                         '{"teacher": "shipped"} distils the artwork\'s shipped filter')
    ap.add_argument("--score-size", type=int, default=384, help="longer side of held-out results when scored")
    ap.add_argument("--curve", action="store_true", help="score snapshots during training (quality vs minutes)")
    ap.add_argument("--eval-every", type=int, default=None)
    ap.add_argument("--set", default="{}", help='JSON of TrainConfig overrides, e.g. \'{"size": 128}\'')
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "quality")
    ap.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results" / "quality.md")
    ap.add_argument("--tag", default="", help="label for this run in the results file")
    ap.add_argument("--ship", action="store_true", help="also write shipped styles' filters into the package")
    ap.add_argument("--keep", type=Path, default=None,
                    help="keep the trained filters in this folder (default: a temporary one, deleted at the end)")
    ap.add_argument("--poster", action="store_true", help="also train on the poster drawn by rotoscope.demo")
    ap.add_argument("--reuse-shipped", action="store_true",
                    help="score a style's shipped filter as it is instead of training one (its own steps are shown)")
    a = ap.parse_args(argv)
    # Ctrl-C or `kill` ends the run through the `finally` below, which writes the finished styles' figures
    # (a job started in the background by a non-interactive shell inherits SIGINT ignored: undo that)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("stopped (SIGTERM); writing the finished styles"))
    torch.set_num_threads(int(os.environ.get("ROTOSCOPE_THREADS", "2")))

    meta = manifest()
    styles = pick_styles(a.styles, sorted(meta))
    if a.poster:
        meta[POSTER] = POSTER_ROW
        styles.append(POSTER)
    a.gallery_size = len(meta)
    if a.variants:
        variants = json.loads(a.variants)
    else:
        variants = {bb: {"backbone": bb} for bb in (a.backbones or "auto").split(",")}
    backbones = [v.get("backbone", "auto") for v in variants.values()]
    first = next(iter(variants))
    base = TrainConfig().replace(**json.loads(a.set))
    if a.steps:
        base = base.replace(steps=a.steps)
    if a.eval_every:
        base = base.replace(eval_every=a.eval_every)
    base = base.replace(checkpoint_every=100_000, checkpoint_seconds=86_400.0, preview_every=1_000_000)  # no disk churn
    held = [(n, resize_longer(load_rgb(SHARED / "content" / n), a.score_size)) for n in HOLDOUT]
    a.out.mkdir(parents=True, exist_ok=True)
    if a.keep:
        a.keep.mkdir(parents=True, exist_ok=True)
    results, curves = [], []
    rows_dir = a.out / "rows"
    rows_dir.mkdir(exist_ok=True)
    shipped = {v: k for k, v in SHIPPED.items()}  # artwork file -> shipped filter name

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        photos = train_folder(tmp)
        os.environ.setdefault("ROTOSCOPE_HOME", str(tmp / "home"))
        # Gram distances in every backbone compared (each favours the filters trained with it: the colour and
        # texture columns are the network-free judges); vgg16-hed is fetched by its first training run
        score_bb = ("random", "vgg16-hed") if "vgg16-hed" in backbones else tuple(metrics.default_backbones())
        # recognisability: every result ranks all the shared artworks (network-free colour and texture)
        gal = metrics.gallery({Path(s).stem: art_file(s, tmp) for s in sorted(meta)}, a.score_size)
        try:
            for style in styles:
                m = meta[style]
                art = load_rgb(art_file(style, tmp))
                sheet_rows = [row_image([art], f"{m['title']} - {m['creator']}, {m['year']}", h=THUMB),
                              row_image([img for _, img in held[:SHEET_PHOTOS]], "held-out photos")]
                for bb, over in variants.items():
                    cfg = base.replace(**over)
                    if over.get("teacher") == "shipped":  # distil the artwork's shipped (full) filter
                        from rotoscope.filter import SHIPPED_DIR

                        if style not in shipped:
                            print(f"  {style} has no shipped filter to learn from: skipped", flush=True)
                            continue
                        cfg = cfg.replace(teacher=str(SHIPPED_DIR / f"{shipped[style]}.safetensors"))
                    snaps = []
                    cpu0, wall0 = time.process_time(), time.perf_counter()
                    name = f"{Path(style).stem}-{bb}"
                    reuse = a.reuse_shipped and shipped_filter(shipped.get(style), cfg)
                    if reuse:  # trained by an earlier run: its card says how long; this run did not time it
                        filt, cpu_min, wall_min = reuse, float("nan"), float("nan")
                        cfg = cfg.replace(steps=filt.card["training"]["steps"])
                        print(f"[{dt.datetime.now(dt.timezone.utc):%H:%M:%S}] scoring shipped {filt.name}", flush=True)
                    else:
                        print(f"[{dt.datetime.now(dt.timezone.utc):%H:%M:%S}] training {name}: {cfg.steps} steps",
                              flush=True)
                        filt = train(art_file(style, tmp), name, photos, cfg, title=m["title"],
                                     out=(a.keep or tmp) / f"{name}.safetensors", log=lambda s: None, progress=False,
                                     monitors=[Snapshots(cfg, snaps, cpu0)] if a.curve else [])
                        cpu_min = (time.process_time() - cpu0) / 2 / 60
                        wall_min = (time.perf_counter() - wall0) / 60
                    # the first variant ships under the artwork's name, lite ones as <name>-lite
                    if a.ship and not reuse and style in shipped and (bb == first or cfg.net.arch != "full"):
                        from rotoscope.filter import SHIPPED_DIR

                        named = shipped_name(shipped[style], cfg)
                        dest = ship(filt.path, named, m, SHIPPED_DIR / f"{named}.safetensors", tmp)
                        print(f"  shipped {dest} ({dest.stat().st_size / 1e6:.2f} MB)", flush=True)
                    outs = stylize_all(filt, held, a.score_size)
                    rep = metrics.score_results([(n, p, o) for (n, p), o in zip(held, outs)], art, a.score_size,
                                                score_bb, name)
                    rec = metrics.recognise([(name, Path(style).stem, n, o) for (n, _), o in zip(held, outs)], gal)
                    summ = rec.summary()
                    row = {"style": Path(style).stem, "backbone": bb, "steps": cfg.steps, "cpu_min": cpu_min,
                           "wall_min": wall_min, **rep.mean(),
                           **{f"photo_{k}": v for k, v in rep.mean("photo_baseline").items()},
                           "both_top1": summ["both_top1"], "texture_top3": summ["texture_top3"],
                           "color_top1": summ["color_top1"], "rank_both": summ["both_mean_rank"],
                           "rank_texture": summ["texture_mean_rank"], "ranks": rec.ranks}
                    results.append(row)
                    print("  " + "  ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                                           for k, v in row.items() if k != "ranks"), flush=True)
                    how = f"shipped {filt.name}" if reuse else f"{cpu_min:.1f} CPU-min"
                    sheet_rows.append(row_image(outs[:SHEET_PHOTOS], f"{bb}: {cfg.steps} steps, {how}"))
                    row_image([thumb(art)] + outs[:SHEET_PHOTOS], f"{m['title']} ({bb}, {cfg.steps} steps, {how})",
                              h=140).save(rows_dir / f"{Path(style).stem}-{bb}.png")
                    for step, minutes, state in snaps:
                        f = net_as_filter(state, filt.card)
                        r = metrics.score_results([(n, p, o) for (n, p), o in zip(held, stylize_all(f, held, a.score_size))],
                                                  art, a.score_size, score_bb, name).mean()
                        curves.append({"style": Path(style).stem, "backbone": bb, "step": step, "cpu_min": minutes, **r})
                        print(f"  curve step {step} {minutes:.2f} CPU-min  " +
                              "  ".join(f"{k} {v:.3f}" for k, v in r.items()), flush=True)
                stack(sheet_rows).save(a.out / f"{Path(style).stem}.png")
        finally:  # a style that fails (or Ctrl-C) does not lose the finished ones' figures
            rows = sorted(rows_dir.glob("*.png"))
            if rows:
                stack([Image.open(r) for r in rows]).save(a.out / "overview.png")
            if results:
                write_results(a, base, results, curves, score_bb)


def write_results(a, cfg: TrainConfig, results: list[dict], curves: list[dict], score_bb) -> None:
    cols = ["cpu_min", "wall_min", *(f"gram_{b}" for b in score_bb), "color", "texture", "ssim", "edges",
            "both_top1", "color_top1", "texture_top3", "rank_both", "rank_texture"]
    head = ["style", "variant", "steps", *cols, "photo gram_random", "photo color", "photo texture"]
    lines = [f"\n## {a.tag or 'run'} ({dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC)\n",
             f"Command: `python benchmarks/quality.py {' '.join(sys.argv[1:])}`  ",
             f"Recipe: {json.dumps({k: v for k, v in cfg.to_dict().items() if k not in ('checkpoint_every', 'preview_every')})}  ",
             f"Held-out photos ({len(HOLDOUT)}, never trained on): {', '.join(HOLDOUT)}; scored at longer side "
             f"{a.score_size}. Style columns: distance from the artwork (lower = closer; `photo ...` = the same for "
             "the unstyled photos, the starting point). Content: ssim / edges vs the photo (1 = identical). "
             f"Recognisability: each result ranks all {a.gallery_size} artworks by network-free colour and "
             "texture (metrics.rank_artworks); `both_top1` = share of results whose own artwork comes first on "
             "both, `texture_top3` = in the top 3 by texture alone, `rank_*` = its mean rank.\n",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        vals = [r["style"], r["backbone"], str(r["steps"])] + [fmt(r.get(c, float("nan"))) for c in cols]
        vals += [fmt(r.get("photo_gram_random", float("nan"))), fmt(r.get("photo_color", float("nan"))),
                 fmt(r.get("photo_texture", float("nan")))]
        lines.append("| " + " | ".join(vals) + " |")
    every = [r for res in results for r in res.get("ranks", [])]
    if every:
        s = metrics.Recognition(every, a.gallery_size).summary()
        lines.append(f"\nAll {len(every)} results: both top-1 {s['both_top1']:.0%}, colour top-1 {s['color_top1']:.0%}, "
                     f"texture top-3 {s['texture_top3']:.0%}, mean rank of the own artwork {s['both_mean_rank']:.1f} "
                     f"(both), {s['texture_mean_rank']:.1f} (texture).")
        for label in dict.fromkeys(r["backbone"] for r in results):
            rows = [x for r in results if r["backbone"] == label for x in r.get("ranks", [])]
            s = metrics.Recognition(rows, a.gallery_size).summary()
            lines.append(f"- {label}: both top-1 {s['both_top1']:.0%}, texture top-3 {s['texture_top3']:.0%}, "
                         f"mean rank {s['both_mean_rank']:.1f}")
    a.results.parent.mkdir(parents=True, exist_ok=True)
    with open(a.results, "a") as f:
        f.write("\n".join(lines) + "\n")
    if curves:
        ccols = ["cpu_min", *(f"gram_{b}" for b in score_bb), "color", "texture", "ssim", "edges"]
        cl = [f"\n## {a.tag or 'curve'} ({dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC)\n",
              f"Command: `python benchmarks/quality.py {' '.join(sys.argv[1:])}`\n",
              "| style | backbone | step | " + " | ".join(ccols) + " |", "|" + "---|" * (3 + len(ccols))]
        for c in curves:
            cl.append(f"| {c['style']} | {c['backbone']} | {c['step']} | " + " | ".join(fmt(c[k]) for k in ccols) + " |")
        with open(a.results.with_name("quality-curve.md"), "a") as f:
            f.write("\n".join(cl) + "\n")
    print(f"wrote {a.results}" + (" and quality-curve.md" if curves else ""))


if __name__ == "__main__":
    main()
