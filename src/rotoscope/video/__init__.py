"""Video: paint every frame of a clip with a filter, steadily, keeping its timing, rotation and sound.

How a render runs (apply_video):
  - a reader thread decodes frames with PyAV (timestamps carried over, never re-spaced) and, for flicker
    reduction, computes the optical flow back to the previous input frame and where that flow is reliable;
  - the main thread stylizes frames in batches, then blends each with the previous *output* warped along the
    flow on reliable pixels (Ruder et al. 2016's temporal idea applied after a feed-forward net);
  - a writer thread encodes fixed-length segments into a work folder beside the output, each finished segment
    kept with its last frame, so a render killed at any point resumes from the finished segments;
  - at the end the segments are remuxed (not re-encoded) into one file together with every audio stream of the
    input, copied packet for packet, and the file appears under its final name only then.
Queues between the threads are bounded, so memory stays flat whatever the clip's length.

The modules, in the order a frame meets them:
  source.py  reading a clip, an animated image or a numbered-frame folder: probe, decode, output_size, picked
             frames for a preview;
  steady.py  flicker reduction: the Stabilizer (optical flow itself lives in rotoscope.flow);
  render.py  the threaded renderer and the entry points: RenderJob, make_job, run_job, apply_video,
             apply_video_cli, preview_sheet, resuming from finished segments; render_range paints a run of
             segments, for the local render and for a cluster task (rotoscope.cluster);
  output.py  writing: the segment writer, then the final H.264 file (audio remuxed), GIF/WebP or frame folder.
The names below are re-exported, so `from rotoscope import video; video.apply_video(...)` is the interface.
"""

from .output import (ANIMATED_OUTPUTS, H264_OUTPUTS, assemble_animated, assemble_frames, assemble_h264,
                     default_clip_output, output_kind)
from .render import (RenderJob, RenderStopped, apply_video, apply_video_cli, frames_per_call, glob_escape,
                     make_job, preview_sheet, render_range, render_segments, run_job, stylize_frames)
from .source import (DEFAULT_RATE, VIDEO_SUFFIXES, Frame, Source, count_frames, decode, frame_sequence,
                     frame_table, is_animated, is_clip, is_video_path, list_clips, output_size, probe)
from .steady import Stabilizer

__all__ = [
    "ANIMATED_OUTPUTS", "DEFAULT_RATE", "H264_OUTPUTS", "VIDEO_SUFFIXES",
    "Frame", "RenderJob", "RenderStopped", "Source", "Stabilizer",
    "apply_video", "apply_video_cli", "assemble_animated", "assemble_frames", "assemble_h264", "count_frames",
    "decode", "default_clip_output", "frame_sequence", "frame_table", "frames_per_call", "glob_escape",
    "is_animated", "is_clip", "is_video_path", "list_clips", "make_job",
    "output_kind", "output_size", "preview_sheet", "probe", "render_range", "render_segments", "run_job", "stylize_frames",
]
