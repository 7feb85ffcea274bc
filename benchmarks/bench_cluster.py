"""Scaling benchmark for `--cluster` (cluster.py): a clip rendered by Ray with 1, 2, 4 ... workers (up to
this machine's cores) against the local render, the cost of a task, and a projection of a 2-hour 1080p film on N
machines.

What it measures, on the start of a shared clip (--clip, --frames, --size, --filter):
  local      video.apply_video: the local threaded render (reader, network, writer threads), all cores;
  ray xN     cluster.apply_video on a local Ray cluster of N CPUs (one single-threaded task per CPU), the clip cut
             into tasks of --segments-per-task segments; wall time from the call to the assembled file (the
             cluster is started before the clock starts);
  per frame  a task's painting cost per frame (one thread), from the task reports;
  per task   what a task costs besides its frames: starting the engine, opening and seeking the clip, the
             warm-up frames it paints and throws away, Ray's scheduling (an empty task's round trip is printed
             apart);
  serial     what the driver does alone: reading the frame table and assembling the output (remux + audio).
The projection multiplies those out for a 2-hour film at 24 fps (172,800 frames) at 1080p: per-frame cost
scaled by the pixel count (the network and the optical flow are linear in pixels), N machines of this kind
(2 cores each) and of a 16-core kind at this machine's per-core speed, and says where it stops scaling.

  python benchmarks/bench_cluster.py                         # basketball.mp4, 192 frames at 640 px, great-wave
  python benchmarks/bench_cluster.py --results               # also write benchmarks/results/cluster.md
Timings are wall clock: on a shared machine they include waiting for other jobs (the load average is printed).
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from rotoscope import cluster, video  # noqa: E402
from rotoscope.config import ClusterConfig, VideoConfig  # noqa: E402
from rotoscope.filter import load_filter  # noqa: E402
from rotoscope.stylize import ApplySettings, resolve  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
FILM_FRAMES = 2 * 3600 * 24  # a 2-hour film at 24 fps
HD = 1920 * 1080


def render_cluster(filt, clip, out, settings, vcfg, ccfg, cpus: int) -> dict:
    """A fresh local Ray cluster of `cpus` CPUs renders the clip; returns the timings."""
    import ray

    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False, logging_level="ERROR",
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
    try:
        # the workers started and rotoscope imported in each (a once-per-worker cost, timed apart), and an empty
        # task's round trip, before the clock
        def imports() -> float:
            t = time.perf_counter()
            import rotoscope.cluster  # noqa: F401
            import rotoscope.video.render  # noqa: F401

            return time.perf_counter() - t

        ray.get([ray.remote(lambda: None).remote() for _ in range(cpus)])
        import_s = max(ray.get([ray.remote(imports).remote() for _ in range(cpus)]))
        noop = ray.remote(lambda: None)
        t = time.perf_counter()
        ray.get([noop.remote() for _ in range(50)])
        noop_ms = (time.perf_counter() - t) / 50 * 1000
        reports = []
        timings = {}

        def timed_renderer(job, progress, warn, on_segment):
            t1 = time.perf_counter()
            n = cluster.render_on_cluster(job, "auto", ccfg, False, lambda _: None, None, None, reports)
            timings["render"] = time.perf_counter() - t1
            return n

        t0 = time.perf_counter()
        job = video.make_job(filt, clip, out, settings, vcfg)
        t1 = time.perf_counter()
        video.frame_table(job.src, vcfg.max_seconds)
        table_s = time.perf_counter() - t1
        video.run_job(job, renderer=timed_renderer, warn=lambda _: None)
        wall = time.perf_counter() - t0
        # a task's fixed cost: a render of one frame (engine, decoder, writer, result), on a worker that has
        # painted before (as every task but a worker's first)
        one_frame = []
        tb = job.src.time_base
        cluster.apply_video(filt, clip, out.with_name("one.mp4"), settings,
                            VideoConfig(segment_frames=4, max_seconds=float(tb) / 2), warn=lambda _: None,
                            reports=one_frame)
    finally:
        ray.shutdown()
    return {"wall": wall, "render": timings["render"], "serial": wall - timings["render"], "table": table_s,
            "reports": reports, "noop_ms": noop_ms, "import_s": import_s, "one_frame": one_frame[0].seconds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clip", default=str(SHARED / "video" / "basketball.mp4"))
    ap.add_argument("--filter", default="great-wave")
    ap.add_argument("--frames", type=int, default=192)
    ap.add_argument("--size", type=int, default=640)
    ap.add_argument("--segment-frames", type=int, default=48)
    ap.add_argument("--segments-per-task", type=int, default=2)
    # 1, 2, 4, ... up to every core of this machine
    here = os.cpu_count() or 2
    default_workers = ",".join(str(n) for n in sorted({n for n in (1, 2, 4, 8, 16, 32, 64) if n < here} | {here}))
    ap.add_argument("--workers", default=default_workers,
                    help=f"Ray CPUs to try, comma-separated (default here: {default_workers})")
    ap.add_argument("--results", action="store_true", help="write benchmarks/results/cluster.md")
    args = ap.parse_args()

    filt = load_filter(args.filter)
    clip = Path(args.clip)
    src = video.probe(clip)
    table = video.frame_table(src)
    if table is None or len(table) <= args.frames:
        sys.exit(f"error: {clip.name} has fewer than {args.frames + 1} frames (or untrustworthy timestamps)")
    # exactly --frames frames: max_seconds ends just before frame number --frames
    vcfg = VideoConfig(segment_frames=args.segment_frames,
                       max_seconds=float((table[args.frames] - table[0]) * src.time_base) - 1e-6)
    w, h = video.output_size(src.width, src.height, args.size, even=True)
    settings, lines = resolve(filt, ApplySettings(size=args.size), (h, w), video=True)  # as `rotoscope apply` picks
    tmp = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    load = os.getloadavg()
    rows = []
    try:
        t0 = time.perf_counter()
        video.apply_video(filt, clip, tmp / "local.mp4", settings, vcfg, warn=lambda _: None)
        local = time.perf_counter() - t0
        frames = len(video.frame_table(video.probe(tmp / "local.mp4")))
        rows.append(("local (threads, all cores)", 0, local, frames / local, None))
        ccfg = ClusterConfig(segments_per_task=args.segments_per_task)
        runs = {}
        for n in [int(x) for x in args.workers.split(",")]:
            r = render_cluster(filt, clip, tmp / f"ray{n}.mp4", settings, vcfg, ccfg, n)
            runs[n] = r
            rows.append((f"ray, {n} worker(s)", len(r["reports"]), r["wall"], frames / r["wall"], r))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    load_after = os.getloadavg()

    # per-frame and per-task costs, from the 1-worker run (no other task shares its core there)
    one = runs[min(runs)]
    reps = one["reports"]
    # a task = fixed + per_frame x (frames + the warm-up it painted); fixed from the one-frame render
    xs = [r.frames + r.warmup for r in reps]
    fixed_s = one["one_frame"]
    per_frame = max(1e-3, (sum(r.seconds for r in reps) - len(reps) * fixed_s) / sum(xs))
    # one worker runs the tasks one after another, so each chains on from the last; on a cluster they run at once
    # and each but the first warms up: the projection below counts that
    warmup = cluster.warmup_frames(ccfg, vcfg)
    out = []
    say = out.append
    say(f"clip: {clip.name}, first {frames} frames at {w}x{h}, filter {filt.name}, {lines[-1] if lines else ''}")
    say(f"segments of {args.segment_frames} frames, {args.segments_per_task} segment(s) per task, warm-up "
        f"{warmup} frames; load average {load[0]:.1f} before, {load_after[0]:.1f} after ({here} cores)")
    say("")
    say("| run | tasks | wall s | frames/s | speed-up vs 1 worker |")
    say("| --- | ---: | ---: | ---: | ---: |")
    base = runs[min(runs)]["wall"]
    for name, tasks, wall, fps, r in rows:
        say(f"| {name} | {tasks or '-'} | {wall:.1f} | {fps:.2f} | {base / wall:.2f}x |" if r else
            f"| {name} | - | {wall:.1f} | {fps:.2f} | - |")
    say("")
    say(f"per frame (one thread, {w}x{h}): {per_frame * 1000:.0f} ms; per task besides its frames: "
        f"{fixed_s:.2f} s (engine, decoder, seek), plus its warm-up ({warmup} frames = {warmup * per_frame:.1f} s); "
        f"an empty Ray task's round trip: {one['noop_ms']:.1f} ms; once per worker process, importing rotoscope: "
        f"{one['import_s']:.1f} s")
    say(f"driver alone: frame table {one['table']:.2f} s for {frames} frames, preparing + assembling "
        f"{one['serial']:.2f} s")

    # the projection, on paper
    scale = HD / (w * h)
    f_hd = per_frame * scale
    seg_hd = 48
    table_per_frame = one["table"] / frames
    asm_per_frame = max(0.0, one["serial"] - one["table"]) / frames
    serial_film = (table_per_frame + asm_per_frame) * FILM_FRAMES
    say("")
    say(f"projection: a 2-hour film at 24 fps ({FILM_FRAMES:,} frames) at 1920x1080, {f_hd:.2f} s a frame on "
        f"one core ({per_frame * 1000:.0f} ms x {scale:.1f} for the pixels), 48-frame segments cut into tasks as "
        "`--cluster` does by default (two per task slot), one task per core; the "
        f"driver's serial part (frame table, remux), scaled from here: {serial_film / 60:.1f} min")
    say("")
    say("| machines | cores each | tasks | painting (frames only) | warm-ups, task costs, idle slots | serial | total |")
    say("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    segs = FILM_FRAMES // seg_hd
    for cores in (2, 16):
        for m in (1, 10, 100, 1000):
            slots = m * cores
            per = cluster.segments_per_task(ClusterConfig(), segs, slots)
            tasks = math.ceil(segs / per)
            waves = math.ceil(tasks / slots)  # tasks run in waves of `slots`; the last may leave slots idle
            task_s = (per * seg_hd + warmup) * f_hd + fixed_s
            paint = FILM_FRAMES * f_hd / slots  # the frames alone, spread evenly over every core
            total = waves * task_s + serial_film
            say(f"| {m} | {cores} | {tasks} | {paint / 3600:.2f} h | {(waves * task_s - paint) / 3600:.2f} h | "
                f"{serial_film / 60:.1f} min | {total / 3600:.2f} h |")
    say("")
    say(f"Where it stops scaling: a task is at least one segment, so past {segs:,} task slots (48-frame "
        "segments) more machines add nothing, and near there every task repaints its warm-up "
        f"({warmup} frames beside 48: the work grows by half); shorter segments (`--set segment_frames=`) go "
        "further at that price. The driver's serial part (the frame table read and the final remux, each one "
        "pass over the film's packets, at disk speed) is the floor under every row. The object store holds only "
        "the filter (about 1 MB, put once) and the task reports, so it is no limit; each task decodes from the "
        "keyframe before its range (it seeks), so decoding grows with the tasks, not with the film times the "
        "tasks. Not measured: a real network (the clip and the segments travel over the shared file system every "
        "node must mount) and a machine's first task (importing rotoscope, measured above, and building the "
        "engine for 1080p).")
    text = "\n".join(out)
    print(text)
    if args.results:
        nice = os.nice(0)
        cmd = (f"nice -n {nice} " if nice else "") + "python " + " ".join(
            shlex.quote(a) for a in ["benchmarks/bench_cluster.py", *sys.argv[1:]])
        # the load before the run is the other jobs'; the load after includes this benchmark's own
        limit = 0.75 * here
        busy = (f"the machine was shared with other jobs (load average above {limit:g} before the run): absolute "
                "times are pessimistic, and the speed-ups are limited by the cores left over"
                if load[0] > limit else f"no other job was running (load average {limit:g} or less before the run)")
        dest = ROOT / "benchmarks" / "results" / "cluster.md"
        # the sections written by hand below the table (## headings: what earlier runs found) are kept
        before = dest.read_text() if dest.exists() else ""
        notes = before[before.index("\n## ") + 1:] if "\n## " in before else ""
        dest.write_text(f"# Ray cluster scaling (benchmarks/bench_cluster.py)\n\n{time.strftime('%Y-%m-%d')}, "
                        f"produced by:\n\n    {cmd}\n\nOn this machine ({here} cores), {busy}.\n\n{text}\n"
                        + (f"\n{notes}" if notes else ""))
        print(f"wrote {dest}")


if __name__ == "__main__":
    main()
