"""NumPy's AVX-512 kernels against its AVX2 ones for training's sorts, and the whole default training step.

Each side runs in its own process (NumPy fixes its kernels at import, rotoscope.numpy_kernels): "numpy's choice"
with NPY_DISABLE_CPU_FEATURES empty, "avx2" with it set to NumPy 2.4's AVX-512 groups. A process times --steps
default training steps (bench_train.rotoscope_step_fn: the default crop size, batch 4, the default backbone, The
Great Wave from ../shared/data as the artwork if it is there) after two warm-up steps, and within them the time
spent in losses.sort_last (the sliced terms' sorts). The sides alternate for --rounds rounds; the table gives
the median of each side's per-round medians and the ratio, measured in the same run. On an AMD Zen 4 rotoscope
takes the AVX2 kernels by itself; elsewhere NumPy's choice stands (numpy_kernels.py says why).

  python benchmarks/bench_numpy_kernels.py
  python benchmarks/bench_numpy_kernels.py --precision bf16 --rounds 3
  ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 python benchmarks/bench_numpy_kernels.py   # torch as on AVX2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

from rotoscope.numpy_kernels import AVX512_GROUPS  # noqa: E402  (the parent times nothing: NumPy may load here)

SIDES = {"numpy's choice": "", "avx2": AVX512_GROUPS}
ARTWORK = HERE.parents[1] / "shared" / "data" / "styles" / "hokusai_great_wave.jpg"


def child(precision: str, steps: int) -> dict:
    """In this process: median ms of a default training step and of its sorts."""
    import torch

    from bench_train import rotoscope_step_fn
    from rotoscope import losses
    from rotoscope.backbones import load_backbone
    from rotoscope.config import TrainConfig
    from rotoscope.images import load_rgb, resize_longer, to_tensor

    cfg = TrainConfig()
    torch.manual_seed(0)
    if ARTWORK.exists():
        art = to_tensor(resize_longer(load_rgb(ARTWORK), cfg.style_size))
        art = art[None] if art.dim() == 3 else art
    else:
        art = torch.rand(1, 3, cfg.style_size, cfg.style_size)
    step = rotoscope_step_fn(load_backbone(cfg.backbone), art, torch.rand(cfg.batch, 3, cfg.size, cfg.size),
                             precision)
    real, spent = losses.sort_last, [0.0]

    def timed(x):
        t = time.perf_counter()
        y = real(x)
        spent[0] += time.perf_counter() - t
        return y

    losses.sort_last = timed
    for _ in range(2):
        step()
    totals, sorts = [], []
    for _ in range(steps):
        spent[0] = 0.0
        t = time.perf_counter()
        step()
        totals.append(time.perf_counter() - t)
        sorts.append(spent[0])
    from numpy._core._multiarray_umath import __cpu_features__

    return {"step_ms": 1e3 * statistics.median(totals), "sort_ms": 1e3 * statistics.median(sorts),
            "numpy_avx512": bool(__cpu_features__.get("AVX512_SKX")), "size": cfg.size}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(a.precision, a.steps)))
        return
    from bench_apply import machine  # imports torch: only in the parent, which times nothing itself

    print(machine(int(os.environ.get("ROTOSCOPE_THREADS", "0")) or os.cpu_count()))
    got: dict[str, list[dict]] = {side: [] for side in SIDES}
    for r in range(a.rounds):
        for side, value in SIDES.items():
            env = {**os.environ, "NPY_DISABLE_CPU_FEATURES": value}
            out = subprocess.run([sys.executable, __file__, "--child", "--precision", a.precision,
                                  "--steps", str(a.steps)], env=env, capture_output=True, text=True,
                                 timeout=1800)
            if out.returncode:
                sys.exit(f"{side}: {out.stderr.strip().splitlines()[-1] if out.stderr.strip() else out.returncode}")
            got[side].append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"  round {r + 1}, {side}: {got[side][-1]}", flush=True)
    size = got["avx2"][0]["size"]
    base = {k: statistics.median(g[k] for g in got["numpy's choice"]) for k in ("step_ms", "sort_ms")}
    print(f"\ndefault training step ({size} px, batch 4, {a.precision}), median of {a.steps} steps, "
          f"{a.rounds} rounds\n")
    print("| numpy kernels | numpy AVX-512 in use | sorts ms/step | x | step ms | x |\n|---|---|---:|---:|---:|---:|")
    for side, runs in got.items():
        sort_ms = statistics.median(g["sort_ms"] for g in runs)
        step_ms = statistics.median(g["step_ms"] for g in runs)
        print(f"| {side} | {'yes' if runs[0]['numpy_avx512'] else 'no'} | {sort_ms:.1f} | "
              f"{base['sort_ms'] / sort_ms:.2f} | {step_ms:.1f} | {base['step_ms'] / step_ms:.2f} |")


if __name__ == "__main__":
    main()
