"""The sliced terms' sort: torch.sort against losses.sort_last (NumPy's vectorised sort) on this CPU.

Shapes like those a 256 px, batch-4 training step sorts with the default sliced style term: (batch, directions,
positions) for the output's side ("with grad": the permutation is needed for the backward pass), (directions,
positions) for the artwork's ("values"), one pair per style layer of a VGG16, plus the colour term; sort_last
on one thread (as before 2026-12-06) and with its rows shared among torch's threads (losses.sort_rows). Median
of --runs calls after a warm-up. With --step, also a whole default training step (bench_train.py's "rotoscope fp32"
row: 256 px, batch 4, the --backbone given) with either sort, median of --runs steps.

  python benchmarks/sort.py
  python benchmarks/sort.py --step --backbone vgg16-hed --runs 5
  ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 python benchmarks/sort.py   # an AVX-512/AMX machine as AVX2
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from bench_apply import in_form  # noqa: E402
from bench_train import median_s, one_thread_sorts, rotoscope_step_fn  # noqa: E402

from rotoscope import losses  # noqa: E402
from rotoscope.losses import sort_last  # noqa: E402

SHAPES = {"relu1_2 (64 ch)": (4, 64, 4096), "relu2_2 (128 ch)": (4, 128, 4096), "relu3_3 (256 ch)": (4, 256, 4096),
          "relu4_3 (512 ch)": (4, 512, 1024), "colour (32 dirs)": (4, 32, 4096)}


def ms(fn, runs: int) -> float:
    return 1e3 * median_s(fn, runs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--step", action="store_true", help="also time a whole training step with either sort")
    ap.add_argument("--backbone", default="random")
    ap.add_argument("--size", type=int, default=256)
    args = ap.parse_args()
    print(f"CPU capability {torch.backends.cpu.get_cpu_capability()}, torch threads {torch.get_num_threads()}")
    print("| shape | side | torch.sort ms | sort_last, 1 thread ms | sort_last ms | x faster |\n"
          "|---|---|---:|---:|---:|---:|")
    totals = [0.0, 0.0, 0.0]
    for name, shape in SHAPES.items():
        x = torch.randn(*shape, generator=torch.Generator().manual_seed(0)).relu()  # ReLU features: many ties
        for side in ("with grad", "values"):
            y = x.clone().requires_grad_() if side == "with grad" else x[0].clone()
            a = ms(lambda: y.sort(dim=-1).values, args.runs)
            one = ms(lambda: in_form(sort_last, one_thread_sorts)(y), args.runs)
            b = ms(lambda: sort_last(y), args.runs)
            totals[0] += a
            totals[1] += one
            totals[2] += b
            print(f"| {name} {tuple(y.shape)} | {side} | {a:.1f} | {one:.1f} | {b:.1f} | {a / b:.1f} |")
    print(f"| all | | {totals[0]:.1f} | {totals[1]:.1f} | {totals[2]:.1f} | {totals[0] / totals[2]:.1f} |")
    if args.step:
        step_table(args)


def step_table(args) -> None:
    """A default fp32 training step (sliced style and colour terms) with torch.sort, then with sort_last."""
    from rotoscope.backbones import load_backbone

    g = torch.Generator().manual_seed(0)
    art, photos = torch.rand(1, 3, 384, 384, generator=g), torch.rand(4, 3, args.size, args.size, generator=g)
    backbone = load_backbone(args.backbone)
    mine = losses.sort_last
    rows = []
    for name, fn in (("torch.sort", lambda x: x.sort(dim=-1).values),
                     ("sort_last, 1 thread", in_form(mine, one_thread_sorts)),
                     ("sort_last", mine)):
        losses.sort_last = fn
        try:
            rows.append((name, median_s(rotoscope_step_fn(backbone, art, photos, "fp32"), args.runs)))
        finally:
            losses.sort_last = mine
    print(f"\ntraining step, {args.size} px, batch 4, {args.backbone}, fp32\n| sort | s per step | x |\n|---|---:|---:|")
    for name, s in rows:
        print(f"| {name} | {s:.3f} | {rows[0][1] / s:.2f} |")


if __name__ == "__main__":
    main()
