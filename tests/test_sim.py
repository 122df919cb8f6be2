"""The road-camera simulator: geometry, vehicle model, renderer and the expert driver."""

from __future__ import annotations

import math

import numpy as np
import pytest

from runtime.sim import BicycleModel, PinholeCamera, Renderer, Road, expert_steer, initial_state
from runtime.sim.render import LINE


@pytest.fixture(scope="module")
def road() -> Road:
    return Road(seed=7)


@pytest.fixture(scope="module")
def small_renderer(road) -> Renderer:
    return Renderer(road, PinholeCamera(width=640, height=360))


def test_road_is_deterministic_and_smooth(road):
    again = Road(seed=7)
    assert np.array_equal(road.x, again.x) and np.array_equal(road.curvature, again.curvature)
    assert not np.array_equal(road.curvature, Road(seed=8).curvature)
    assert np.abs(road.curvature).max() <= 1 / 150 + 1e-9  # no bend tighter than 150 m
    assert np.abs(np.diff(road.curvature)).max() / road.ds < 1e-3  # curvature ramps, never jumps
    assert np.abs(np.diff(road.heading)).max() < 0.01  # heading continuous
    assert (np.abs(road.curvature) > 1 / 600 - 1e-9).any()  # it does curve
    step = np.hypot(np.diff(road.x), np.diff(road.y))
    assert np.allclose(step, road.ds, rtol=1e-3)  # arc length is what it claims


@pytest.mark.parametrize("s, d", [(100.0, 0.0), (812.3, 0.8), (2500.0, -1.5)])
def test_project_round_trip(road, s, d):
    x, y, h = road.pose_at(s)
    px, py = x - d * math.sin(h), y + d * math.cos(h)  # d metres to the left
    s2, lat, h2 = road.project(px, py, s_hint=s + 5.0)
    assert s2 == pytest.approx(s, abs=0.02) and lat == pytest.approx(d, abs=0.005)
    assert h2 == pytest.approx(h, abs=1e-3)


def test_bicycle_straight_and_circle():
    car = BicycleModel(wheelbase_m=2.7)
    st = initial_state(Road(seed=1), 0.0, speed=10.0)
    st1 = car.step(st, 0.0, 1.0)
    assert (st1.x - st.x, st1.y - st.y, st1.yaw) == pytest.approx((10.0, 0.0, st.yaw), abs=1e-9)
    delta = 0.2
    radius = 2.7 / math.tan(delta)
    cx, cy = st.x - radius * math.sin(st.yaw), st.y + radius * math.cos(st.yaw)
    s = st
    for _ in range(300):
        s = car.step(s, delta, 1 / 30)
        assert math.hypot(s.x - cx, s.y - cy) == pytest.approx(radius, rel=1e-9)
    assert car.step(st, 10.0, 0.1) == car.step(st, 0.5, 0.1)  # steering clamped to max_steer


def test_camera_projects_ground_points_back_to_their_rows():
    cam = PinholeCamera()
    forward, k = cam.ground_rows()
    for fwd, left in ((5.0, 0.0), (20.0, 1.8), (60.0, -3.0)):
        u, v = cam.project(fwd, left)
        row = int(round(v))
        assert forward[row] == pytest.approx(fwd, rel=0.03)
        assert k[row] * (cam.cx - u) == pytest.approx(left, rel=0.03, abs=0.02)
    assert np.isinf(forward[: int(cam.horizon_row)]).all()


def _line_columns(img: np.ndarray, row: int) -> np.ndarray:
    """Centres of bright line runs in a row (paint is near-white, asphalt and grass are not)."""
    bright = img[row].min(axis=1) > 180
    cols = np.flatnonzero(bright)
    if cols.size == 0:
        return cols
    runs = np.split(cols, np.flatnonzero(np.diff(cols) > 1) + 1)
    return np.array([r.mean() for r in runs])


def test_lines_where_the_camera_model_puts_them(small_renderer, road):
    cam = small_renderer.camera
    img = np.empty((cam.height, cam.width, 3), np.uint8)
    st = initial_state(road, 20.0)  # the first 60 m are straight
    small_renderer.render(st.x, st.y, st.yaw, img)
    row = cam.height - 20
    u_right, _ = cam.project(cam.ground_rows()[0][row], -road.lane_width / 2)
    cols = _line_columns(img, row)
    assert np.min(np.abs(cols - u_right)) < 2.0, (cols, u_right)
    assert img[row, int(cam.cx)].max() < 180  # the car's own lane centre is asphalt, no paint
    assert (img[5] == img[5, 0]).all()  # sky rows are uniform


def test_render_is_deterministic_and_writes_only_the_target(small_renderer, road):
    cam = small_renderer.camera
    a = np.zeros((cam.height, cam.width, 3), np.uint8)
    b = np.full_like(a, 7)
    st = initial_state(road, 300.0, 0.3, 0.02)
    small_renderer.render(st.x, st.y, st.yaw, a)
    small_renderer.render(st.x, st.y, st.yaw, b)
    assert np.array_equal(a, b)
    with pytest.raises(ValueError, match="render target must be uint8"):
        small_renderer.render(st.x, st.y, st.yaw, np.zeros((10, 10, 3), np.uint8))


def test_offset_to_the_left_moves_lines_right(small_renderer, road):
    cam = small_renderer.camera
    row = int(np.argmin(np.abs(cam.ground_rows()[0] - 15.0)))  # the ground 15 m ahead
    centred, left = (np.empty((cam.height, cam.width, 3), np.uint8) for _ in range(2))
    for lat, img in ((0.0, centred), (1.0, left)):
        st = initial_state(road, 20.0, lat)
        small_renderer.render(st.x, st.y, st.yaw, img)
    c0, c1 = _line_columns(centred, row), _line_columns(left, row)
    right0, right1 = c0.max(), c1.max()
    assert right1 > right0 + 5  # the right edge line moved right in the image


def test_line_paint_colour_is_the_configured_one(small_renderer, road):
    cam = small_renderer.camera
    img = np.empty((cam.height, cam.width, 3), np.uint8)
    st = initial_state(road, 20.0)
    small_renderer.render(st.x, st.y, st.yaw, img)
    row = cam.height - 5
    u = int(round(cam.project(cam.ground_rows()[0][row], -road.lane_width / 2)[0]))
    assert np.abs(img[row, u].astype(int) - LINE.astype(int)).max() <= 30


@pytest.mark.parametrize("lat0, heading0", [(0.0, 0.0), (1.0, 0.1)])
def test_expert_keeps_the_car_in_lane(road, lat0, heading0):
    car = BicycleModel()
    st = initial_state(road, 0.0, lat0, heading0, speed=15.0)
    s, worst = 0.0, 0.0
    for i in range(120 * 30):
        st = car.step(st, expert_steer(road, st, s_hint=s), 1 / 30)
        s, lat, _ = road.project(st.x, st.y, s)
        if i > 5 * 30:  # after the initial recovery
            worst = max(worst, abs(lat))
    assert worst < 0.3
    assert s > 1700  # it drove the road, 120 s at 15 m/s
