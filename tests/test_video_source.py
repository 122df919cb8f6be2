"""camera.source = "video": clips made with PyAV from simulator frames (H.264 and MPEG-4, known
frame count and rate) through the real pipeline in both modes; the slot writers on real decoded
frames; a corrupt, a truncated and an unreadable file; looping; a stream over loopback HTTP that
drops and comes back."""

from __future__ import annotations

import http.server
import logging
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED_MACHINE_CONTROL, make_steer_model, write_manifest

from edgert.runtime import cli
from edgert.runtime.config import DEFAULT_CONFIG, ConfigError, from_dict, load
from edgert.runtime.wire import Stamp

av = pytest.importorskip("av", reason="the video source needs PyAV (the camera extra)")

from edgert.runtime import video  # noqa: E402
from edgert.runtime.sim.clip import render_drive, road_clip, write_clip  # noqa: E402
from edgert.runtime.supervisor import Supervisor, format_summary  # noqa: E402

W, H = 160, 120  # test_record's size and tiny model: the preprocess kernel is compiled once for both
CLIPS = {"h264": 25.0, "mpeg4": 20.0}  # codec -> frame rate; each clip is 1 s
RUN_BOUND_S = 120.0  # only ends a test that would hang: a run ends by itself at the end of its video


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> dict[str, Path]:
    """A signed tiny model, its trusted key, and the clips: one second each of the simulated road."""
    from edgert.runtime import signing

    root = tmp_path_factory.mktemp("video")
    d = root / "tiny"
    d.mkdir()
    make_steer_model(d / "model.onnx")
    write_manifest(d)
    text = (d / "manifest.toml").read_text()
    (d / "manifest.toml").write_text(text.replace('markets = ["EU"]', 'markets = ["sim"]\npublisher = "test-pub"'))
    signing.keygen(root / "keys", "test-pub")
    signing.sign(d, root / "keys" / "test-pub.pem")
    out = {"model": d, "keys": root / "keys"}
    base = load(DEFAULT_CONFIG)
    for codec, fps in CLIPS.items():
        out[codec] = root / f"road-{codec}.mp4"
        assert road_clip(out[codec], base, 1.0, fps, (W, H), codec) == int(fps)
    return out


def video_config(assets, uri: str | Path, mode: str = "threads", **camera):  # type: ignore[no-untyped-def]
    return from_dict({"pipeline": {"mode": mode, "log_level": "INFO"},
                      "camera": {"source": "video", "uri": str(uri), "width": W, "height": H, **camera},
                      "infer": {"model": str(assets["model"]), "trusted_keys": str(assets["keys"])},
                      "control": SHARED_MACHINE_CONTROL})


def run_to_end(cfg) -> tuple[dict, np.ndarray]:  # type: ignore[no-untyped-def]
    """Run the pipeline until the source ends it (bounded); the summary and the model commands' stamps."""
    sup = Supervisor(cfg, duration_s=RUN_BOUND_S)
    summary = sup.run()
    assert sup.telemetry is not None
    return summary, sup.telemetry.stamps.data


# -- decoded frame -> slot ------------------------------------------------------------------------
def test_slot_writers_pack_real_decoded_frames_with_row_padding(assets):
    o = video.open_video(str(assets["h264"]))
    try:
        frame = next(o.container.decode(o.stream))
        assert frame.format.name == "yuv420p" and (frame.width, frame.height) == (W, H)
        assert frame.planes[0].line_size > W, "FFmpeg pads rows here: the writers must cut the padding off"
        for fmt, shape in (("i420", (H * 3 // 2, W)), ("nv12", (H * 3 // 2, W)), ("bgr", (H, W, 3)),
                           ("rgb", (H, W, 3))):
            slot = np.full(shape, 7, np.uint8)
            video.SlotWriter(fmt, W, H, "clip")(frame, slot)
            want = frame.to_ndarray(format=video.AV_FORMAT[fmt]).reshape(shape)  # FFmpeg's own packing
            assert np.array_equal(slot, want), fmt
        # NV12 from NV12 (what hardware decoders hand over): Y and interleaved UV, row padding cut
        nv = frame.reformat(format="nv12")
        slot = np.zeros((H * 3 // 2, W), np.uint8)
        video.write_nv12(nv, slot)
        assert np.array_equal(slot, nv.to_ndarray().reshape(slot.shape))
        # another size: scaled by swscale into the camera's
        half = np.zeros((H // 2, W // 2, 3), np.uint8)
        video.SlotWriter("bgr", W // 2, H // 2, "clip")(frame, half)
        assert np.array_equal(half, frame.reformat(width=W // 2, height=H // 2, format="bgr24").to_ndarray())
    finally:
        o.close()
    with pytest.raises(video.VideoError, match="even width and height"):
        video.SlotWriter("nv12", 161, 120, "clip")


def test_yuv_slots_check_the_streams_colour_metadata_against_the_config(tmp_path, caplog):
    clip = tmp_path / "bt709.mkv"
    with av.open(str(clip), "w") as out:  # a stream that says BT.709, full range
        s = out.add_stream("mpeg4", rate=10)
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        s.codec_context.colorspace, s.codec_context.color_range = 1, 2
        f = av.VideoFrame.from_ndarray(np.full((H, W, 3), 90, np.uint8), format="bgr24")
        for p in [*s.encode(f), *s.encode()]:
            out.mux(p)
    o = video.open_video(str(clip))
    try:
        frame = next(o.container.decode(o.stream))
    finally:
        o.close()
    assert video.yuv_metadata(frame) == ("bt709", "full")
    slot = np.zeros((H * 3 // 2, W), np.uint8)
    with caplog.at_level(logging.WARNING, logger="edgert.video"):
        video.SlotWriter("nv12", W, H, "bt709.mkv", ("bt709", "full"))(frame, slot)
        assert not caplog.records
        writer = video.SlotWriter("nv12", W, H, "bt709.mkv", ("bt601", "limited"))
        writer(frame, slot)
        writer(frame, slot)  # once, not per frame
    assert [r.getMessage() for r in caplog.records] == [
        "bt709.mkv: the video says YUV bt709, full range; camera.yuv_matrix/yuv_range say bt601, limited: colours "
        "would decode wrong; set camera.yuv_matrix = \"bt709\" and yuv_range = \"full\""]


def test_clips_have_the_frame_count_and_rate_asked_for(assets):
    for codec, fps in CLIPS.items():
        o = video.open_video(str(assets[codec]))
        try:
            assert o.rate == pytest.approx(fps) and o.size == (W, H) and o.decoder == f"software {codec}" or \
                o.decoder.startswith("hardware")
            assert sum(1 for _ in o.container.decode(o.stream)) == int(fps)
        finally:
            o.close()


# -- config and setup errors ----------------------------------------------------------------------
def test_video_keys_are_validated_with_the_fix(assets, tmp_path):
    base = {"camera": {"source": "video", "width": W, "height": H}}
    with pytest.raises(ConfigError, match=r"camera.uri: required with camera.source = \"video\""):
        from_dict(base)
    with pytest.raises(ConfigError, match=r"camera.uri: .*nope.mp4 not found .*`edgert sim clip .*nope.mp4`"):
        from_dict({"camera": {**base["camera"], "uri": "nope.mp4"}}, base_dir=tmp_path)
    with pytest.raises(ConfigError, match="not a scheme the video source reads"):
        from_dict({"camera": {**base["camera"], "uri": "gopher://cam/1"}})
    with pytest.raises(ConfigError, match=r"camera.uri: set, but camera.source is 'sim'"):
        from_dict({"camera": {"uri": str(assets["h264"])}})
    with pytest.raises(ConfigError, match=r"camera.loop: set, but camera.source is 'frames'"):
        from_dict({"camera": {"source": "frames", "loop": True}})
    with pytest.raises(ConfigError, match=r"camera.pacing: 'poisson' needs camera.source = \"frames\" .*'video' takes "
                                          "stream, fixed, closed"):
        from_dict({"camera": {**base["camera"], "uri": str(assets["h264"]), "pacing": "poisson"}})
    with pytest.raises(ConfigError, match=r"camera.pacing: 'stream' needs camera.source = \"video\""):
        from_dict({"camera": {"source": "frames", "pacing": "stream"}})
    # a relative path resolves against the config's folder; a URL is kept as written
    cfg = from_dict({"camera": {**base["camera"], "uri": assets["h264"].name}}, base_dir=assets["h264"].parent)
    assert cfg.video_uri() == str(assets["h264"]) and cfg.camera.pacing == "" and cfg.camera.loop is False
    url = from_dict({"camera": {**base["camera"], "uri": "rtsp://127.0.0.1:8554/cam"}})
    assert url.video_uri() == "rtsp://127.0.0.1:8554/cam"
    # the example config: its clip beside it, as `edgert sim clip configs/road.mp4` puts it
    example = tmp_path / "video.toml"
    example.write_text((Path(__file__).resolve().parent.parent / "configs" / "video.toml").read_text())
    (tmp_path / "road.mp4").write_bytes(assets["h264"].read_bytes())
    ex = load(example)
    assert (ex.camera.source, ex.video_uri(), ex.camera.pacing) == ("video", str(tmp_path / "road.mp4"), "stream")


def test_unreadable_inputs_are_refused_naming_the_file_and_the_fix(tmp_path):
    with pytest.raises(video.VideoError, match=r"nope.mp4: no such file; camera.uri names a video file"):
        video.open_video(str(tmp_path / "nope.mp4"))
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    with pytest.raises(video.VideoError, match=r"garbage.mp4: FFmpeg cannot read it \(.*\); camera.uri must be"):
        video.open_video(str(garbage))
    sound = tmp_path / "sound.wav"  # a real media file with no picture
    with av.open(str(sound), "w") as out:
        s = out.add_stream("pcm_s16le", rate=8000)
        f = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        f.sample_rate = 8000
        for p in [*s.encode(f), *s.encode()]:
            out.mux(p)
    with pytest.raises(video.VideoError, match=r"sound.wav: no video stream \(only audio\)"):
        video.open_video(str(sound))


def test_an_unreadable_file_fails_the_run_at_start_up(assets, tmp_path):
    from edgert.runtime.supervisor import StageFailed

    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"\x00not a video\xff" * 1000)
    with pytest.raises(StageFailed, match="stage capture failed during start-up"):
        Supervisor(video_config(assets, garbage), duration_s=RUN_BOUND_S).run()


def test_a_file_at_another_rate_than_camera_fps_is_refused_with_stream_pacing(assets, caplog):
    """Stream pacing plays the clip at its rate while deadlines and the stall check follow camera.fps:
    a 20 fps clip with camera.fps = 30 would flap CAMERA_LOST between frames."""
    from edgert.runtime.supervisor import StageFailed

    with caplog.at_level(logging.ERROR), pytest.raises(StageFailed, match="stage capture failed during start-up"):
        Supervisor(video_config(assets, assets["mpeg4"], pacing="stream", fps=30), duration_s=RUN_BOUND_S).run()
    text = "\n".join(r.getMessage() + str(r.exc_info and r.exc_info[1]) for r in caplog.records)
    assert (f"{assets['mpeg4']}: the video runs at 20 fps, camera.fps is 30" in text and "camera.fps = 20" in text
            and 'camera.pacing = "fixed"' in text), text
    # a live stream's rate is what the camera sends: a warning with the same fix, when its decoder opens
    from types import SimpleNamespace

    from edgert.runtime.stages.videosource import VideoStage

    caplog.clear()
    stage = SimpleNamespace(cfg=video_config(assets, "rtsp://127.0.0.1:8554/cam", fps=30), pacing="stream",
                            label="rtsp://127.0.0.1:8554/cam", log=logging.getLogger("edgert.capture"))
    with caplog.at_level(logging.WARNING, logger="edgert.capture"):
        VideoStage._check_rate(stage, 30.9, refuse=False)  # within 5 %: nothing to say
        VideoStage._check_rate(stage, 20.0, refuse=False)
    assert [r.getMessage()[:64] for r in caplog.records] == [
        "rtsp://127.0.0.1:8554/cam: the video runs at 20 fps, camera.fps is 30"[:64]], caplog.records


# -- the real pipeline ----------------------------------------------------------------------------
@pytest.mark.parametrize("mode, codec, pacing, fmt", [
    ("threads", "h264", "closed", "bgr"), ("processes", "mpeg4", "closed", "bgr"),
    ("processes", "h264", "stream", "bgr"), ("threads", "mpeg4", "stream", "bgr"),
    ("threads", "h264", "closed", "nv12"), ("processes", "h264", "closed", "i420"),  # decoded 4:2:0, unconverted
    ("threads", "h264", "fixed", "rgb"),
])
def test_every_frame_of_the_clip_goes_through_and_the_run_ends_with_it(assets, mode, codec, pacing, fmt):
    n = int(CLIPS[codec])
    fps = {"fixed": 10.0, "stream": CLIPS[codec]}.get(pacing, 30.0)  # fixed: camera.fps, not the clip's rate
    summary, stamps = run_to_end(video_config(assets, assets[codec], mode, pacing=pacing, format=fmt, fps=fps))
    st = summary["stages"]
    assert "capture: its input ended" in summary["exit_reason"], summary["exit_reason"]
    assert st["capture"]["frames"] == n and st["capture"]["rejected"] == 0 and st["capture"]["errors"] == 0, st
    assert not any(s["restarts"] or s["given_up"] for s in st.values()), st
    assert not summary["leaked_segments"]
    if pacing == "closed":  # the next frame only once the last one's command is out: none dropped anywhere
        for name in ("capture", "preprocess", "infer", "control"):
            assert st[name]["frames"] == n and st[name]["dropped"] == 0, (name, st)
    assert summary["commands"]["model_commands"] > 0 and len(stamps) > 0
    if pacing in ("stream", "fixed"):  # the clip's own rate, or camera.fps: never faster than that period
        # Lower bounds only: a loaded machine delays frames (an upper bound would fail there) and the
        # schedule then catches up with short intervals, so the median gets a wide margin; the mean
        # (the span over the frames) cannot be beaten by catching up.
        iv, period = np.diff(stamps[:, Stamp.CAPTURE]), 1e9 / (CLIPS[codec] if pacing == "stream" else fps)
        assert iv.mean() >= period * 0.95 and np.median(iv) >= period * 0.5, (period, iv)
    assert summary["source"] == "video" and summary["lane"]["frames"] == 0
    assert "lane keeping: not measured (camera.source = 'video' has no vehicle ground truth" in format_summary(summary)


def test_loop_keeps_going_past_the_end(assets, caplog):
    n = int(CLIPS["mpeg4"])
    sup = Supervisor(video_config(assets, assets["mpeg4"], pacing="closed", loop=True), duration_s=RUN_BOUND_S)
    with caplog.at_level(logging.INFO, logger="edgert.capture"):
        sup.start()
        try:
            while sup.poll() and sup.counters()["capture"]["frames"] < 2 * n + 5:
                time.sleep(0.01)
        finally:
            summary = sup.stop()
    assert summary["stages"]["capture"]["frames"] >= 2 * n + 5, summary["exit_reason"]
    assert "input ended" not in summary["exit_reason"]
    assert sum("end of video after 20 frames" in r.getMessage() and "looping" in r.getMessage()
               for r in caplog.records) >= 2
    assert summary["stages"]["control"]["dropped"] == 0 and summary["stages"]["capture"]["dropped"] == 0


def _frames_fit_to_publish(path: Path) -> tuple[int, int, int]:
    """(frames FFmpeg hands over, those before the first corrupt data, those the rule publishes: none
    from corrupt data up to the next keyframe), by decoding `path` here."""
    c = av.open(str(path))
    s = c.streams.video[0]
    n = before = fit = 0
    broken = waiting = False
    for packet in c.demux(s):
        try:
            frames = packet.decode()
        except av.InvalidDataError:
            broken = waiting = True
            continue
        for f in frames:
            n += 1
            before += not broken
            waiting = waiting and not f.key_frame
            fit += not waiting
    c.close()
    return n, before, fit


def test_a_looping_file_that_cannot_be_read_on_ends_the_run_with_the_error(assets, tmp_path, caplog):
    """A raw H.264 file cannot seek: each loop opens it again; deleted mid-run, that fails, and the
    run ends (it used to wait in a lost camera for ever)."""
    raw = tmp_path / "road.h264"
    n = write_clip(raw, (f.copy() for f in render_drive(load(DEFAULT_CONFIG), 10, 20.0, W, H)), 20.0, "h264")
    sup = Supervisor(video_config(assets, raw, pacing="closed", loop=True), duration_s=RUN_BOUND_S)
    with caplog.at_level(logging.INFO, logger="edgert.capture"):
        sup.start()  # the stage has the file open: its first pass plays to the end
        raw.unlink()
        try:
            while sup.poll():
                time.sleep(0.01)
        finally:
            summary = sup.stop()
    st = summary["stages"]["capture"]
    assert "input ended" in summary["exit_reason"] and st["frames"] == n and st["errors"] == 0, (summary, st)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert f"{raw}: cannot read on after frame 0 (0.000 s): {raw}: no such file" in text, text
    assert f"end of video {raw} after {n} frames" in text and "truncated" not in text, text


def test_corrupt_data_is_a_camera_lost_takeover_and_no_frame_before_the_next_keyframe_goes_out(
        assets, tmp_path, caplog):
    """FFmpeg conceals damage (frames predicted from a broken reference come out as plausible
    pictures): the source must drop them up to the next keyframe and hand over at once."""
    good = tmp_path / "gop10.mp4"  # a keyframe every 10 frames: the picture comes back mid-clip
    write_clip(good, (f.copy() for f in render_drive(load(DEFAULT_CONFIG), 30, 25.0, W, H)), 25.0, "h264", gop=10)
    bad = tmp_path / "corrupt.mp4"
    for frac in (0.5, 0.55, 0.3, 0.35, 0.6):  # damage inside a group of pictures (the encoder's layout may vary)
        data = bytearray(good.read_bytes())
        at = int(len(data) * frac)
        data[at:at + 400] = np.random.default_rng(3).integers(0, 256, 400, dtype=np.uint8).tobytes()
        bad.write_bytes(bytes(data))
        n, before, fit = _frames_fit_to_publish(bad)
        if 0 < before < fit < n - 1:  # concealed frames to drop, and a keyframe after them
            break
    else:
        pytest.fail(f"no damage in the middle of a group of pictures: {before}, {fit}, {n}")
    with caplog.at_level(logging.INFO, logger="edgert.capture"):
        summary, _ = run_to_end(video_config(assets, bad, pacing="closed"))
    st = summary["stages"]["capture"]
    assert "input ended" in summary["exit_reason"]
    assert st["frames"] == fit and st["errors"] == 0, (st, fit)  # the concealed frames never went out
    assert st["rejected"] >= n - fit, st  # each dropped frame counted (and each corrupt packet)
    assert "CAMERA_LOST" in [t["reason"] for t in summary["takeovers"]], summary["takeovers"]
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert f"{bad}: corrupt data at frame {before} (" in text, text
    assert f"camera lost: corrupt data in {bad} at frame {before} (" in text, text
    assert "waiting for the next keyframe" in text and "reconnecting" not in text, text
    assert "camera back after" in text, text  # the keyframe
    assert f"end of video {bad} after {st['frames']} frames" in text, text


def test_a_truncated_file_plays_to_the_cut_and_says_so(assets, tmp_path, caplog):
    data = assets["h264"].read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[:len(data) * 2 // 3])  # the index is at the front (faststart): readable to the cut
    with caplog.at_level(logging.INFO, logger="edgert.capture"):
        summary, _ = run_to_end(video_config(assets, cut, pacing="closed"))
    st = summary["stages"]["capture"]
    assert "input ended" in summary["exit_reason"] and 0 < st["frames"] < int(CLIPS["h264"]), (summary, st)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert f"{cut}: truncated: it ends after {st['frames']} of the 25 frames its header lists" in text, text
    assert f"end of video {cut} after {st['frames']} frames" in text, text


# -- a stream over loopback -----------------------------------------------------------------------
class _FlakyCamera(http.server.BaseHTTPRequestHandler):
    """Serves an MPEG-TS clip; once it has served the whole clip, it refuses the next `refuse`
    requests with 503 (a camera rebooting), then serves again."""

    body = b""
    refuse = 0
    refused = 0

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        cls = type(self)
        if cls.refuse:
            cls.refuse -= 1
            cls.refused += 1
            self.send_error(503, "rebooting")
            return
        self.send_response(200)
        self.send_header("Content-Type", "video/mp2t")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        try:
            self.wfile.write(self.body)
        except OSError:
            return  # the client hung up early (FFmpeg probing): not a whole clip served
        if not cls.refused:
            cls.refuse = 2

    def log_message(self, *args: object) -> None:
        pass


def test_a_stream_that_drops_is_lost_then_reconnected(assets, tmp_path, caplog):
    """An HTTP stream ends (the server closes it) and refuses the next two connections: the source
    says the camera is lost, retries with back-off, and says it is back once frames flow again."""
    ts = tmp_path / "road.ts"
    n = write_clip(ts, (f.copy() for f in render_drive(load(DEFAULT_CONFIG), 20, 20.0, W, H)), 20.0, "h264")
    _FlakyCamera.body, _FlakyCamera.refuse, _FlakyCamera.refused = ts.read_bytes(), 0, 0
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FlakyCamera)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/cam.ts"
    sup = Supervisor(video_config(assets, url, pacing="closed"), duration_s=RUN_BOUND_S)
    try:
        with caplog.at_level(logging.INFO, logger="edgert.capture"):
            sup.start()
            try:
                while sup.poll() and not any("camera back after" in r.getMessage() for r in caplog.records):
                    time.sleep(0.01)
                end = time.monotonic() + 0.5
                while sup.poll() and time.monotonic() < end:  # frames flow on after the reconnect
                    time.sleep(0.01)
            finally:
                summary = sup.stop()
    finally:
        server.shutdown()
        server.server_close()
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert f"camera lost: {url}: the stream ended; reconnecting" in text, text
    assert text.count("reconnect failed: ") == 2 and "5XX" in text, text  # the two refusals
    assert "camera back after" in text and _FlakyCamera.refused == 2
    st = summary["stages"]["capture"]
    # a live stream never waits: the clip arrives faster than the closed loop takes it, and every frame
    # of the first pass is either published or dropped for a newer one (counted); frames flow after it
    assert st["frames"] + st["dropped"] >= n and st["frames"] >= 2 and st["errors"] == 0, st
    assert "CAMERA_LOST" in summary["commands"]["takeover_reasons"], summary["commands"]  # control handed over


# -- the command line -----------------------------------------------------------------------------
def test_sim_clip_writes_a_clip_of_the_asked_length_rate_and_size(tmp_path, capsys):
    out = tmp_path / "road.mp4"
    assert cli.main(["sim", "clip", str(out), "--seconds", "0.4", "--fps", "10", "--size", "64x48",
                     "--codec", "mpeg4"]) == 0
    said = capsys.readouterr().out
    assert f"{out}: 4 frames, 64x48 at 10 fps (mpeg4)" in said
    # the camera keeps the model's size (its preprocess spec is written for it): the source scales the clip
    assert "keep camera.width/height at the model's camera size (1920x1080 in " in said and "width = 64" not in said
    o = video.open_video(str(out))
    try:
        assert o.size == (64, 48) and o.rate == pytest.approx(10) and o.stream.codec_context.name == "mpeg4"
    finally:
        o.close()
    assert cli.main(["sim", "clip", str(out), "--size", "65x48"]) == 2
    assert "both even" in capsys.readouterr().err
    # without --size: the config's camera size, which the example config and the default model share
    small = tmp_path / "small.toml"
    small.write_text("[camera]\nwidth = 64\nheight = 48\n")
    assert cli.main(["sim", "clip", str(out), "--seconds", "0.1", "--fps", "10", "--config", str(small)]) == 0
    assert f"{out}: 1 frames, 64x48 at 10 fps" in capsys.readouterr().out
    from edgert.runtime.config import tomllib  # tomli before Python 3.11

    example = tomllib.loads((Path(__file__).resolve().parent.parent / "configs" / "video.toml").read_text())
    default = load(DEFAULT_CONFIG).camera
    assert (example["camera"]["width"], example["camera"]["height"]) == (default.width, default.height) == (1920, 1080)


# -- the benchmark --------------------------------------------------------------------------------
@pytest.mark.slow  # about 25 s on 2 cores (two pipelines and the standalone timings); the pipeline runs above
def test_bench_pipeline_on_video_reports_decode_cost_beside_the_pipeline(assets, tmp_path):  # cover the source
    pytest.importorskip("matplotlib", reason="edgert bench needs the bench extra")
    from edgert.bench import pipeline

    config = tmp_path / "tiny.toml"
    config.write_text(f'[camera]\nwidth = {W}\nheight = {H}\n[infer]\nmodel = "{assets["model"]}"\n'
                      f'trusted_keys = "{assets["keys"]}"\n[control]\ndeadline_ms = 500.0\n')
    rep = pipeline.run(quick=True, video=assets["h264"], config=config, min_count=10, min_duration_s=0.5, rounds=1,
                       progress=False)
    assert rep.benchmark == "pipeline-single-stream-video" and rep.config["video"] == str(assets["h264"])
    assert rep.pipelines == ("edgert", "edgert-threads", "edgert-nv12")  # NV12 slots on the same clip, same run
    assert rep.ratios["edgert-nv12:preprocess/edgert:preprocess"] > 0
    assert rep.ratios["standalone:preprocess-nv12/standalone:preprocess"] > 0
    for case in ("decode:bgr", "decode:nv12", "edgert", "edgert-threads", "standalone:preprocess"):
        assert rep.cases[case]["n"] > 0, case
    assert rep.ratios["decode:nv12/decode:bgr"] > 0
    for p in rep.pipelines:  # the video source looped: every command of a closed loop, none dropped
        assert rep.details["pipelines"][p]["commands"] >= 10, p
        assert rep.details["stages"][p]["capture"]["errors"] == 0, p
    assert any(n.startswith("video: ") and "decode:FMT" in n for n in rep.notes)
    paths = rep.write(tmp_path / "out")
    assert all(p.is_file() for p in paths)


def test_without_pyav_the_video_source_says_which_extra_to_install(assets, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "av", None)  # as if PyAV were not installed
    with pytest.raises(ConfigError, match=r"camera.source = \"video\" decodes with FFmpeg through PyAV, which is not "
                                          r"installed: pip install 'edgert\[camera\]'"):
        from_dict({"camera": {"source": "video", "uri": str(assets["h264"]), "width": W, "height": H}})
    with pytest.raises(video.VideoError, match=r"pip install 'edgert\[camera\]'"):
        video.require_av()
    assert cli.main(["sim", "clip", str(assets["h264"].parent / "x.mp4"), "--seconds", "0.1", "--size", "64x48"]) == 2
