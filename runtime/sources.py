"""Camera sources, by the name `camera.source` uses, and the stage class that implements each.

Every source publishes the same topics (frames into the camera pool, vehicle ground truth where it
has one), so the rest of the pipeline does not know which one runs; each is a
runtime/stages/source.py `CameraSource` (start signal, pacing, the camera stream's FrameOutput).
Kept free of imports so that config validation and the stage registry can both read it.
"""

CAPTURE_SOURCES = {
    "sim": "edgert.runtime.stages.capture:CaptureStage",  # the road-camera simulator, closing the loop
    "frames": "edgert.runtime.stages.frames:FramesStage",  # pre-rendered frames at a benchmark's pacing
    "replay": "edgert.runtime.stages.replaysource:ReplayStage",  # a recording's frames (replay.file; `edgert replay`)
    "video": "edgert.runtime.stages.videosource:VideoStage",  # a video file or stream URL (camera.uri), via PyAV
    "v4l2": "edgert.runtime.stages.v4l2source:V4L2Stage",  # a V4L2 camera, e.g. USB (camera.device; docs/cameras.md)
}
