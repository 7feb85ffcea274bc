"""The sliced terms' sort: torch.sort against losses.sort_last (NumPy's vectorised sort) on this CPU.

Shapes like those a 256 px, batch-4 training step sorts with the default sliced style term: (batch, directions,
positions) for the output's side ("with grad": the permutation is needed for the backward pass), (directions,
positions) for the artwork's ("values"), one pair per style layer of a VGG16, plus the colour term. Median of
--runs calls after a warm-up.

  python benchmarks/sort.py
  ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 python benchmarks/sort.py   # an AVX-512/AMX machine as AVX2
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from rotoscope.losses import sort_last

SHAPES = {"relu1_2 (64 ch)": (4, 64, 4096), "relu2_2 (128 ch)": (4, 128, 4096), "relu3_3 (256 ch)": (4, 256, 4096),
          "relu4_3 (512 ch)": (4, 512, 1024), "colour (32 dirs)": (4, 32, 4096)}


def ms(fn, runs: int) -> float:
    fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    print(f"CPU capability {torch.backends.cpu.get_cpu_capability()}, torch threads {torch.get_num_threads()}")
    print(f"| shape | side | torch.sort ms | sort_last ms | x faster |\n|---|---|---:|---:|---:|")
    totals = [0.0, 0.0]
    for name, shape in SHAPES.items():
        x = torch.randn(*shape, generator=torch.Generator().manual_seed(0)).relu()  # ReLU features: many ties
        for side in ("with grad", "values"):
            y = x.clone().requires_grad_() if side == "with grad" else x[0].clone()
            a = ms(lambda: y.sort(dim=-1).values, args.runs)
            b = ms(lambda: sort_last(y), args.runs)
            totals[0] += a
            totals[1] += b
            print(f"| {name} {tuple(y.shape)} | {side} | {a:.1f} | {b:.1f} | {a / b:.1f} |")
    print(f"| all | | {totals[0]:.1f} | {totals[1]:.1f} | {totals[0] / totals[1]:.1f} |")


if __name__ == "__main__":
    main()
