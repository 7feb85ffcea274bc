"""`rotoscope live` on a clip standing in for a camera: the paint scale it fits against whole frames, in one run.

For each --sizes, the first --frames frames of --clip are scaled to that size and painted by `live.run_live` with
the lite filter (`great-wave-lite` when shipped), headless, steadied with live's flow: once with the paint scale
fitted to the clip's frame rate (the default) and once painting whole frames (`paint_scale=1`), --repeats times,
alternating. The table gives frames per second, the scale chosen, milliseconds a frame per stage, and the fitted
run's speed against whole frames in the same round.

  python benchmarks/bench_live.py
  ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 python benchmarks/bench_live.py   # as an AVX2-only CPU
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_apply import parse_sizes  # noqa: E402
from bench_lite import make_clip, shipped_or_random  # noqa: E402
from machine import describe  # noqa: E402

from rotoscope.config import ApplySettings  # noqa: E402
from rotoscope.live import run_live  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1280x720,640x360")
    ap.add_argument("--clip", type=Path, default=SHARED / "video" / "basketball.mp4")
    ap.add_argument("--frames", type=int, default=192)
    ap.add_argument("--repeats", type=int, default=2)
    a = ap.parse_args()
    if not a.clip.exists():
        sys.exit(f"no clip at {a.clip}: pass --clip")
    print(describe())
    filt = shipped_or_random("great-wave-lite", "lite")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for w, h in parse_sizes(a.sizes):
            cam = make_clip(a.clip, Path(tmp) / f"cam-{w}x{h}.mp4", w, h, a.frames)
            run_live(filt, str(cam), ApplySettings(), frames=8, window=False, log=lambda s: None)  # calibrations
            for r in range(a.repeats):
                base = None
                for label, scale in (("whole frames", 1.0), ("fitted", None)):
                    said = []
                    st = run_live(filt, str(cam), ApplySettings(), window=False, log=said.append,
                                  paint_scale=scale)
                    base = base or st.fps
                    rows.append({"size": f"{w}x{h}", "round": r + 1, "variant": label, "fps": st.fps,
                                 "x": st.fps / base, "scale": st.paint_scale, "ms": st.ms,
                                 "engine": f"{st.engine} {st.precision}"})
                    fit = next((s for s in said if s.startswith("paint scale")), "")
                    print(f"  {w}x{h} round {r + 1} {label}: {st.line()}" + (f"\n    {fit}" if fit else ""),
                          flush=True)
    print("\n| size | round | variant | fps | x whole frames | paint scale | paint ms | steady ms | engine |\n"
          "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | --- |")
    for r in rows:
        print(f"| {r['size']} | {r['round']} | {r['variant']} | {r['fps']:.1f} | {r['x']:.2f} | {r['scale']:g} | "
              f"{r['ms']['paint']:.0f} | {r['ms']['steady']:.0f} | {r['engine']} |")


if __name__ == "__main__":
    main()
