"""Where a render's time goes: busy seconds of each stage, grouped by the thread that runs it.

The renderer is three threads joined by bounded queues (render.py): the reader decodes and prepares the flicker
reduction and masks, the painter runs the network and blends, the writer guides a painting made at a paint scale up
to the frame's size and encodes. The render goes as fast as its busiest thread allows, so that thread is the
bottleneck; when the threads' busy times add up to more than the wall time, they ran at once on several cores (and
compete for them).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

# stage -> the thread that runs it, in the order a frame meets them
STAGES = {"decode": "reader", "flow": "reader", "masks": "reader", "paint": "painter", "steady": "painter",
          "upsample": "writer", "encode": "writer"}


@dataclass
class StageTimes:
    """Busy seconds per stage of one render (each stage is timed only by its own thread)."""

    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    frames: int = 0  # frames painted (warm-up frames of a cluster task included)
    wall: float = 0.0  # seconds from the first of this render's frames decoded to the last segment written (on a
    # cluster: the driver's wait for its tasks, which ran at once, so the busy seconds add up to more than the wall)
    began: float | None = field(default=None, repr=False)  # perf_counter() when the reader began this render's
    # first frame: frames decoded before it (a resumed render catching up) are not this render's work

    def start_wall(self, began: float) -> None:
        """Mark when this run's own work began: the reader, at its first frame's decode (before any later stage
        can have seen a frame)."""
        self.began = began

    def stop_wall(self) -> None:
        """Add the time since the run's work began to the wall; every busy second counted lies inside it."""
        if self.began is not None:
            self.wall += time.perf_counter() - self.began
            self.began = None

    def add(self, stage: str, since: float) -> float:
        """Add the time since `since` (time.perf_counter()) to a stage; returns now, for the next stage."""
        now = time.perf_counter()
        self.seconds[stage] += now - since
        return now

    @staticmethod
    def timed(items: Iterable) -> Iterator[tuple[object, float]]:
        """(item, seconds it took to produce) for each item of an iterator (a decoder): the caller decides whether
        it counts (a resumed render decodes the frames it already painted, and those are not its work)."""
        it = iter(items)
        while True:
            t = time.perf_counter()
            try:
                item = next(it)
            except StopIteration:
                return
            yield item, time.perf_counter() - t

    def merge(self, d: dict) -> None:
        """Add another render's StageTimes.to_dict() (a cluster task's): its stages and frames, not its wall."""
        for k, ms in d["ms_per_frame"].items():
            self.seconds[k] = self.seconds.get(k, 0.0) + ms * d["frames"] / 1000
        self.frames += d["frames"]

    def threads(self) -> dict[str, float]:
        """Busy seconds per thread."""
        out: dict[str, float] = {}
        for stage, s in self.seconds.items():
            out[STAGES[stage]] = out.get(STAGES[stage], 0.0) + s
        return out

    def bottleneck(self) -> str:
        busy = self.threads()
        return max(busy, key=busy.get)

    def per_frame_ms(self) -> dict[str, float]:
        n = max(1, self.frames)
        return {k: 1000 * s / n for k, s in self.seconds.items()}

    def to_dict(self) -> dict:
        n = max(1, self.frames)
        return {"frames": self.frames, "wall_s": round(self.wall, 3),
                "fps": round(self.frames / self.wall, 2) if self.wall > 0 else None,
                "ms_per_frame": {k: round(v, 2) for k, v in self.per_frame_ms().items()},
                "thread_ms_per_frame": {k: round(1000 * s / n, 2) for k, s in self.threads().items()},
                "bottleneck": self.bottleneck()}

    def summary(self) -> str:
        return describe(self.to_dict())


def describe(d: dict) -> str:
    """StageTimes.to_dict() in one line: each stage's milliseconds a frame and the busiest thread."""
    stages = ", ".join(f"{k} {v:.1f}" for k, v in d["ms_per_frame"].items() if v >= 0.05)
    top = d["bottleneck"]
    top_ms = d["thread_ms_per_frame"][top]
    return (f"ms a frame: {stages}; busiest thread: {top} ({top_ms:.1f} ms a frame, so at most "
            f"{1000 / top_ms if top_ms > 0 else float('inf'):.1f} fps; got {d['fps']})")
