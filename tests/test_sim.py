"""The road-camera simulator: road geometry, vehicle model, camera, renderer and the expert driver."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgert.runtime.sim import BicycleModel, PinholeCamera, Renderer, Road, VehicleState, expert_steer, initial_state
from edgert.runtime.sim.render import DASH_M, FOG, GAP_M, HAZE_POWER, LINE, LINE_WIDTH_M

SMALL = PinholeCamera(width=640, height=360)


@pytest.fixture(scope="module")
def road() -> Road:
    return Road(seed=7)


@pytest.fixture(scope="module")
def renderer(road: Road) -> Renderer:
    return Renderer(road, SMALL)


def _frame(cam: PinholeCamera = SMALL) -> np.ndarray:
    return np.empty((cam.height, cam.width, 3), np.uint8)


# --- road ------------------------------------------------------------------------------------

def test_road_is_deterministic_per_seed(road):
    again, other = Road(seed=7), Road(seed=8)
    for name in ("s", "x", "y", "heading", "curvature"):
        assert np.array_equal(getattr(road, name), getattr(again, name)), name
    assert not np.array_equal(road.curvature, other.curvature)


@pytest.mark.parametrize("seed", [7, 8, 100, 111])
def test_road_is_continuous_and_within_bounds(seed):
    r = Road(seed=seed, length_m=6000.0)
    assert r.length == pytest.approx(6000.0) and r.s[1] - r.s[0] == pytest.approx(r.ds)
    k = r.curvature
    assert np.abs(k).max() <= 1 / 150 + 1e-12  # no bend tighter than 150 m
    assert np.abs(np.diff(k)).max() / r.ds < 3e-4  # curvature ramps (clothoids), never jumps
    assert np.abs(np.diff(r.heading)).max() <= r.ds / 150 + 1e-12  # heading continuous
    assert np.all(k[r.s <= 60.0] == 0.0)  # the first 60 m are straight
    assert (k > 1 / 600).any() and (k < -1 / 600).any()  # it bends both ways
    assert (np.abs(k) < 1e-9).mean() > 0.05  # and has straights
    assert np.abs(r.heading).max() < math.pi / 2 - 0.1  # never doubles back, so never crosses itself
    step = np.hypot(np.diff(r.x), np.diff(r.y))
    assert np.allclose(step, r.ds, rtol=1e-6)  # arc length is what it claims
    # position is the integral of heading: chord directions match the sampled heading
    chord = np.arctan2(np.diff(r.y), np.diff(r.x))
    assert np.abs(chord - 0.5 * (r.heading[1:] + r.heading[:-1])).max() < 1e-9


@pytest.mark.parametrize("s, d", [(30.0, 0.0), (812.3, 0.8), (1579.0, -1.5), (2500.125, 3.0), (4000.0, -0.01)])
def test_project_round_trip(road, s, d):
    x, y, h = road.pose_at(s)
    px, py = x - d * math.sin(h), y + d * math.cos(h)  # d metres to the left of the lane centre
    for hint in (s + 5.0, None, s - 400.0):  # near, none, and a stale hint (falls back to a full search)
        s2, lat, h2 = road.project(px, py, s_hint=hint)
        assert s2 == pytest.approx(s, abs=1e-3) and lat == pytest.approx(d, abs=1e-4), hint
        assert h2 == pytest.approx(h, abs=1e-6)


def test_pose_at_clamps_to_the_road(road):
    assert road.pose_at(-5.0) == road.pose_at(0.0) == (0.0, 0.0, 0.0)
    assert road.pose_at(road.length + 10.0) == road.pose_at(road.length)


# --- vehicle ---------------------------------------------------------------------------------

def test_bicycle_drives_straight_at_zero_steer():
    car = BicycleModel(wheelbase_m=2.7)
    st = VehicleState(1.0, 2.0, 0.3, 10.0)
    for _ in range(30):
        st = car.step(st, 0.0, 1 / 30)
    assert (st.x, st.y, st.yaw) == pytest.approx((1.0 + 10 * math.cos(0.3), 2.0 + 10 * math.sin(0.3), 0.3), abs=1e-9)


@pytest.mark.parametrize("delta", [0.2, -0.05])
def test_bicycle_circles_at_constant_steer(delta):
    car = BicycleModel(wheelbase_m=2.7)
    st = VehicleState(0.0, 0.0, 0.4, 10.0)
    radius = 2.7 / math.tan(delta)  # signed: positive = centre to the left
    cx, cy = st.x - radius * math.sin(st.yaw), st.y + radius * math.cos(st.yaw)
    s = st
    for _ in range(300):
        s = car.step(s, delta, 1 / 30)
        assert math.hypot(s.x - cx, s.y - cy) == pytest.approx(abs(radius), rel=1e-9)
    assert s.yaw - st.yaw == pytest.approx(10.0 * 10.0 / radius, rel=1e-9)  # 100 m driven
    assert car.step(st, 10.0, 0.1) == car.step(st, 0.5, 0.1)  # steering clamped to max_steer
    assert car.step(st, -10.0, 0.1) == car.step(st, -0.5, 0.1)


def test_initial_state_is_offset_to_the_left(road):
    st = initial_state(road, 812.3, 0.7, 0.05, speed=12.0)
    s, lat, h = road.project(st.x, st.y, 812.0)
    assert (s, lat, st.yaw - h, st.speed) == pytest.approx((812.3, 0.7, 0.05, 12.0), abs=1e-6)


# --- camera ----------------------------------------------------------------------------------

def test_camera_ground_point_round_trip():
    cam = PinholeCamera()
    assert cam.horizon_row == pytest.approx(cam.cy - cam.fx * math.tan(math.radians(4.0)))
    forward, k = cam.ground_rows()
    assert np.isinf(forward[: math.floor(cam.horizon_row) + 1]).all()
    assert np.isfinite(forward[math.ceil(cam.horizon_row) + 1:]).all()
    assert np.all(np.diff(forward[np.isfinite(forward)]) < 0)  # lower rows see nearer ground
    for fwd, left in ((3.5, 0.0), (5.0, 1.8), (20.0, -1.8), (60.0, 5.4), (140.0, -3.0)):
        u, v = cam.project(fwd, left)
        assert cam.unproject(u, v) == pytest.approx((fwd, left), rel=1e-9, abs=1e-9)
        # and through the per-row tables the renderer uses, at the nearest integer row
        row = round(v)
        u_row, v_row = cam.project(forward[row], k[row] * (cam.cx - u))
        assert v_row == pytest.approx(row, abs=1e-6) and u_row == pytest.approx(u, abs=1e-6)
    with pytest.raises(ValueError):
        cam.unproject(cam.cx, cam.horizon_row - 1)


# --- renderer --------------------------------------------------------------------------------

def _whiteness(img: np.ndarray, row: int) -> np.ndarray:
    """How much paint each pixel of a row shows: the min over channels above the asphalt's."""
    return np.clip(img[row].min(axis=1).astype(float) - 120.0, 0.0, None)


def _peaks(img: np.ndarray, row: int) -> list[float]:
    """Paint-weighted centre column of each run of painted pixels in a row."""
    w = _whiteness(img, row)
    cols = np.flatnonzero(w > 0)
    runs = np.split(cols, np.flatnonzero(np.diff(cols) > 1) + 1) if cols.size else []
    return [float((r * w[r]).sum() / w[r].sum()) for r in runs]


def _dash_start(road: Road, row: int, cam: PinholeCamera) -> float:
    """A car position on the first straight whose image row `row` sees the middle of a dash."""
    forward = cam.ground_rows()[0][row]
    return 2 * (DASH_M + GAP_M) + 0.5 * DASH_M - forward


def test_lane_lines_appear_where_the_camera_model_puts_them(renderer, road):
    cam = renderer.camera
    row = cam.height - 12
    img = _frame()
    st = initial_state(road, _dash_start(road, row, cam))  # centred, on the straight start
    renderer.render(st.x, st.y, st.yaw, img)
    forward = cam.ground_rows()[0][row]
    expected = [cam.project(forward, off)[0] for off in road.line_offsets]  # right edge, centre, left edge
    visible = [u for u in expected if 0 <= u < cam.width]
    peaks = _peaks(img, row)
    assert len(peaks) == len(visible) == 2, (peaks, expected)
    assert sorted(peaks) == pytest.approx(sorted(visible), abs=0.5)
    assert img[row, int(cam.cx)].max() < 140  # the car's own lane centre is bare asphalt
    centre_u = round(expected[1])
    assert np.abs(img[row, centre_u].astype(int) - LINE.astype(int)).max() <= 12  # the paint colour
    assert (img[3] == img[3, 0]).all()  # sky rows are uniform


def test_offset_to_the_left_moves_the_lines_right(renderer, road):
    cam = renderer.camera
    row = cam.height - 12
    forward = cam.ground_rows()[0][row]
    s0 = _dash_start(road, row, cam)
    cols = []
    for lat in (0.0, 1.0):
        img = _frame()
        st = initial_state(road, s0, lat)
        renderer.render(st.x, st.y, st.yaw, img)
        cols.append(sorted(_peaks(img, row)))
    shift = cam.project(forward, -1.0)[0] - cam.cx  # a line 1 m further right of the camera
    assert shift > 20
    for c0, c1 in zip(cols[0], cols[1]):
        assert c1 - c0 == pytest.approx(shift, abs=0.5)


def test_render_writes_every_pixel_of_the_target_and_nothing_else(renderer, road):
    cam = renderer.camera
    n = cam.height * cam.width * 3
    st = initial_state(road, 1579.0, 0.3, 0.02)  # on a bend
    results = []
    for fill in (0, 255):
        backing = np.full(n + 2000, fill, np.uint8)
        target = backing[1000:1000 + n].reshape(cam.height, cam.width, 3)
        renderer.render(st.x, st.y, st.yaw, target)
        assert (backing[:1000] == fill).all() and (backing[-1000:] == fill).all()
        results.append(target.copy())
    assert np.array_equal(results[0], results[1])  # nothing of the old contents shows through


def test_render_is_deterministic(renderer, road):
    other = Renderer(Road(seed=7), SMALL)
    a, b, c = _frame(), _frame(), _frame()
    st = initial_state(road, 2500.0, -0.4, -0.03)
    renderer.render(st.x, st.y, st.yaw, a)
    other.render(st.x, st.y, st.yaw, b)
    renderer.render(0.0, 0.0, 0.0, c)  # a jump elsewhere and back changes nothing
    renderer.render(st.x, st.y, st.yaw, c)
    assert np.array_equal(a, b) and np.array_equal(a, c)
    st2 = initial_state(road, 2500.5, -0.4, -0.03)
    renderer.render(st2.x, st2.y, st2.yaw, c)
    assert not np.array_equal(a, c)  # half a metre of motion shows


def test_render_rejects_a_wrong_target(renderer):
    cam = renderer.camera
    bad = [np.zeros((10, 10, 3), np.uint8), np.zeros((cam.height, cam.width, 3), np.float32),
           np.zeros((cam.height, cam.width * 2, 3), np.uint8)[:, ::2], np.zeros((cam.height, cam.width, 4), np.uint8)]
    ro = _frame()
    ro.flags.writeable = False
    for out in bad + [ro]:
        with pytest.raises(ValueError, match="render target"):
            renderer.render(0.0, 0.0, 0.0, out)


def test_thin_far_line_does_not_flicker(renderer, road):
    """A line thinner than a pixel, slid sideways by fractions of a pixel, keeps its total paint
    and never shows at more than its width's worth in one pixel (box-filtered coverage); a
    point-sampled line would jump between a full pixel and nothing."""
    cam = renderer.camera
    forward, k = cam.ground_rows()
    row = int(np.flatnonzero(np.isfinite(forward) & (forward < 100.0))[0])  # ~100 m ahead
    width_px = LINE_WIDTH_M / k[row]
    assert 0.5 < width_px < 1.0
    s0 = 4560.0
    assert np.abs(road.curvature[(road.s > s0 - 10) & (road.s < s0 + 110)]).max() == 0.0  # a straight
    haze = (forward[row] / renderer.max_range) ** HAZE_POWER
    paint = LINE * (1 - haze) + FOG * haze
    img = _frame()
    for lat in np.linspace(0.0, 2 * k[row], 13):  # slide sideways across two pixels
        st = initial_state(road, s0, lat)
        renderer.render(st.x, st.y, st.yaw, img)
        u = round(cam.project(forward[row], -road.lane_width / 2 - lat)[0])  # the right edge line
        px = img[row, u - 5:u + 8].astype(float)
        asphalt, grass = px[0], px[-1]  # the lane left of the line; grass beyond the 0.3 m shoulder
        # each pixel = asphalt + g (grass - asphalt) + p (paint - asphalt): solve for the paint share p
        basis = np.stack([grass - asphalt, paint - asphalt], axis=1)
        share = np.linalg.lstsq(basis, (px - asphalt).T, rcond=None)[0][1]
        assert share.sum() == pytest.approx(width_px, abs=0.03), share
        assert share.max() <= width_px + 0.02 and share.min() > -0.02, share


# --- expert ----------------------------------------------------------------------------------

@pytest.mark.parametrize("lat0, heading0", [(0.0, 0.0), (1.0, 0.1), (-1.0, -0.1)])
def test_expert_keeps_the_car_in_lane(road, lat0, heading0):
    car = BicycleModel()
    st = initial_state(road, 0.0, lat0, heading0, speed=15.0)
    s, lateral = 0.0, []
    for _ in range(120 * 30):
        st = car.step(st, expert_steer(road, st, s_hint=s), 1 / 30)
        s, lat, _ = road.project(st.x, st.y, s)
        lateral.append(lat)
    lateral = np.abs(np.array(lateral))
    settled = lateral[5 * 30:] if lat0 else lateral  # an offset start gets 5 s to recover
    assert settled.max() < 0.3
    assert s == pytest.approx(120 * 15.0, rel=0.01)  # it drove the road, 120 s at 15 m/s


# --- explicit roads, unmarked stretches, camera effects (the scenarios' building blocks) -----

def test_road_from_segments_holds_each_curvature_with_ramps_between():
    segs = [(30.0, 0.0), (80.0, 1 / 200), (80.0, -1 / 150)]
    r = Road(length_m=500.0, segments=segs)
    k = r.curvature
    assert np.all(k[r.s <= 30.0] == 0.0)
    assert np.abs(np.diff(k)).max() / r.ds < 3e-4  # clothoid ramps, never a jump
    # each hold is reached and held for its length (ramps: 30 m in, 60 m through the reversal)
    assert np.isclose(k, 1 / 200).sum() * r.ds == pytest.approx(80.0, abs=0.5)
    assert np.isclose(k, -1 / 150).sum() * r.ds == pytest.approx(80.0, abs=0.5)
    assert np.all(k[r.s > 30 + 30 + 80 + 60 + 80 + 60] == 0.0)  # ramps out, then straight to the end
    assert r.length == pytest.approx(500.0)
    step = np.hypot(np.diff(r.x), np.diff(r.y))
    assert np.allclose(step, r.ds, rtol=1e-6)
    assert Road(seed=7).unmarked.shape == (0, 2)  # the random road is unchanged and fully marked
    for bad, msg in (([], "empty"), ([(0.0, 0.0)], "length 0.0 m must be > 0"),
                     ([(50.0, 0.1)], "curvature 0.1 1/m outside"), ([(50.0,)], "not a \\(length_m, curvature\\) pair")):
        with pytest.raises(ValueError, match=msg):
            Road(length_m=500.0, segments=bad)
    with pytest.raises(ValueError, match="unmarked stretch 0"):
        Road(length_m=500.0, segments=segs, unmarked=[(50.0, 40.0)])


def test_unmarked_stretch_has_no_paint():
    cam = SMALL
    row = cam.height - 12
    plain = Road(length_m=400.0, segments=[(400.0, 0.0)])
    worn = Road(length_m=400.0, segments=[(400.0, 0.0)], unmarked=[(20.0, 60.0)])
    assert not worn.is_marked(40.0) and worn.is_marked(60.0)
    a, b = _frame(), _frame()
    forward = cam.ground_rows()[0][row]
    st = initial_state(plain, _dash_start(plain, row, cam))  # the row sees a dash and both edge lines
    assert 20.0 < st.x + forward < 60.0
    Renderer(plain, cam).render(st.x, st.y, st.yaw, a)
    Renderer(worn, cam).render(st.x, st.y, st.yaw, b)
    assert len(_peaks(a, row)) == 2 and _peaks(b, row) == []  # lines there on one road, none on the other
    far = cam.ground_rows()[0]
    beyond = int(np.flatnonzero(np.isfinite(far) & (st.x + far > 70.0) & (far < 120.0))[-1])
    assert _peaks(a, beyond) and np.array_equal(a[beyond], b[beyond])  # past the stretch: painted the same


def test_frame_effects_gain_noise_and_salt():
    from edgert.runtime.sim.effects import FrameEffects

    fx = FrameEffects(seed=3)
    base = np.full((180, 320, 3), 100, np.uint8)
    img = base.copy()
    fx.apply(img, gain=0.5)
    assert (img == 50).all()
    img = base.copy()
    fx.apply(img, gain=3.0)
    assert (img == 255).all()  # saturates, never wraps
    img = base.copy()
    fx.apply(img, sigma=10.0)
    assert img.astype(float).mean() == pytest.approx(100.0, abs=0.3)
    assert img.astype(float).std() == pytest.approx(10.0, rel=0.05)
    img2 = base.copy()
    fx.apply(img2, sigma=10.0)
    assert not np.array_equal(img, img2)  # new noise every frame
    img = base.copy()
    fx.apply(img, salt=0.01)
    stuck = (img == 0) | (img == 255)
    assert stuck.mean() == pytest.approx(0.01, rel=0.15) and (img[~stuck] == 100).all()
    again = base.copy()
    FrameEffects(seed=3).apply(again, gain=0.5)
    other = base.copy()
    FrameEffects(seed=3).apply(other, sigma=10.0)
    first = base.copy()
    FrameEffects(seed=3).apply(first, sigma=10.0)
    assert np.array_equal(other, first)  # a seed gives the same noise: runs repeat
