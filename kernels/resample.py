"""Per-axis resampling tap tables, built once per (spec, source size), never per frame.

Both resize modes reduce to a separable weighted sum: output sample i along an axis is
sum_k w[i, k] * src[idx[i, k]]. Tables are (idx int32 [n_out, taps], w float32 [n_out, taps]),
rows padded with weight 0 (and a valid index) to the widest row, so one kernel serves both
modes and the per-frame loop has no mode branches. Indices are relative to the ROI's
first row/column; the ROI's edges are treated as the image's edges (replicated), as
cv2.resize on the cropped view does.

The tables follow OpenCV's cv::resize (imgproc/src/resize.cpp) step by step, including its
float32 rounding of the fractional positions, so the kernel reproduces cv2.resize on float
input to float32 precision:
  bilinear   src = (dst + 0.5) * scale - 0.5, floored; the fraction is the weight of the next
             sample; positions outside [0, n_src - 1] clamp to the edge with weight 0.
  area       when neither axis is upscaled (cv2.INTER_AREA's decimation path): each output
             sample averages the source interval [i * scale, (i + 1) * scale) with
             fractional coverage of its end samples (computeResizeAreaTab, whose 1e-3
             slivers OpenCV drops are dropped here too).
             When either axis is upscaled, OpenCV's INTER_AREA switches *both* axes to a
             2-tap linear rule with its own phase: sx = floor(i * scale),
             f = frac((i + 1) - (sx + 1) / scale) (0 if <= 0). Mirrored here.
"""

from __future__ import annotations

import math

import numpy as np

TapTable = tuple[np.ndarray, np.ndarray]  # (idx int32 [n_out, taps], w float32 [n_out, taps])


def _pack(rows: list[list[tuple[int, float | np.float32]]]) -> TapTable:
    taps = max(len(r) for r in rows)
    idx = np.zeros((len(rows), taps), np.int32)
    w = np.zeros((len(rows), taps), np.float32)
    for i, r in enumerate(rows):
        for k, (s, a) in enumerate(r):
            idx[i, k], w[i, k] = s, a
        idx[i, len(r):] = r[-1][0]  # padding: weight 0 on an index that is already in cache
    return idx, w


def _two_tap(n_src: int, sx: int, fx: np.float32) -> list[tuple[int, float | np.float32]]:
    # OpenCV's border rule for 2-tap kernels: clamp to the edge sample and drop the fraction.
    if sx < 0:
        sx, fx = 0, np.float32(0)
    if sx >= n_src - 1:
        sx, fx = n_src - 1, np.float32(0)
    return [(sx, np.float32(1) - fx), (min(sx + 1, n_src - 1), fx)]


def linear_taps(n_src: int, n_dst: int) -> TapTable:
    """cv2.INTER_LINEAR along one axis (pixel-centre aligned, edges replicated)."""
    inv_scale = n_dst / n_src
    scale = 1.0 / inv_scale
    rows = []
    for d in range(n_dst):
        fx = np.float32((d + 0.5) * scale - 0.5)
        sx = math.floor(fx)
        rows.append(_two_tap(n_src, sx, np.float32(fx - np.float32(sx))))
    return _pack(rows)


def area_linear_taps(n_src: int, n_dst: int) -> TapTable:
    """cv2.INTER_AREA along one axis when the other (or this) axis is upscaled."""
    inv_scale = n_dst / n_src
    scale = 1.0 / inv_scale
    rows = []
    for d in range(n_dst):
        sx = math.floor(d * scale)
        fx = np.float32((d + 1) - (sx + 1) * inv_scale)
        fx = np.float32(0) if fx <= 0 else np.float32(fx - np.float32(math.floor(fx)))
        rows.append(_two_tap(n_src, sx, fx))
    return _pack(rows)


def area_taps(n_src: int, n_dst: int) -> TapTable:
    """cv2.INTER_AREA decimation along one axis (n_dst <= n_src): fractional box average."""
    if n_dst > n_src:
        raise ValueError(f"area decimation needs n_dst <= n_src, got {n_dst} > {n_src}")
    scale = 1.0 / (n_dst / n_src)
    rows = []
    for d in range(n_dst):
        f1 = d * scale
        f2 = f1 + scale
        cell = min(scale, n_src - f1)
        s1, s2 = math.ceil(f1), math.floor(f2)
        s2 = min(s2, n_src - 1)
        s1 = min(s1, s2)
        r: list[tuple[int, float | np.float32]] = []
        if s1 - f1 > 1e-3:
            r.append((s1 - 1, np.float32((s1 - f1) / cell)))
        for s in range(s1, s2):
            r.append((s, np.float32(1.0 / cell)))
        if f2 - s2 > 1e-3:
            r.append((s2, np.float32(min(min(f2 - s2, 1.0), cell) / cell)))
        rows.append(r)
    return _pack(rows)


def window_starts(idx: np.ndarray, w: np.ndarray) -> np.ndarray:
    """uint32 [n_out]: first index of each row, after checking that every row's weighted taps
    are consecutive (idx[i, k] == start + k wherever w[i, k] != 0).

    Both modes have this shape, so the kernel can walk a window from its start instead of
    loading an index per tap. Zero-weight taps may then read up to taps - 1 samples past the
    last source sample: the caller must pad what it reads with finite values (zeros).
    """
    start = idx[:, 0].astype(np.int64)
    k = np.arange(idx.shape[1])
    bad = (w != 0) & (idx != start[:, None] + k[None, :])
    if bad.any():
        i = int(np.argwhere(bad)[0, 0])
        raise ValueError(f"tap row {i} is not a consecutive window: idx {idx[i].tolist()} w {w[i].tolist()}")
    return start.astype(np.uint32)


def trim_taps(idx: np.ndarray, w: np.ndarray) -> tuple[int, int, np.ndarray, np.ndarray]:
    """Drop zero-weight taps: (first, span, start, tw).

    first, span  the source samples any tap weighs lie in [first, first + span);
    start        uint32 [n_out]: each output's first weighted sample, relative to `first`;
    tw           float32 [n_out, t]: its weights in order, padded with 0 to the widest row.
    cv2's bilinear pads every row to 2 taps even when the phase is integral: 1920 -> 640 has
    x weights (1, 0) throughout, so trimming halves the horizontal work there. Dropping a tap
    of weight 0 changes no sum (x + 0 * finite == x): results stay bit-identical. The
    weighted taps of a row must be consecutive samples (both resize modes guarantee it).
    """
    nz = w != 0
    if not nz.any(axis=1).all():
        raise ValueError("every output sample needs a non-zero tap")
    first = int(idx[nz].min())
    span = int(idx[nz].max()) - first + 1
    width = int(nz.sum(axis=1).max())
    start = np.empty(idx.shape[0], np.uint32)
    tw = np.zeros((idx.shape[0], width), np.float32)
    for i in range(idx.shape[0]):
        ks = np.flatnonzero(nz[i])
        if np.any(idx[i, ks] != idx[i, ks[0]] + np.arange(ks.size)):
            raise ValueError(f"tap row {i}: weighted samples {idx[i, ks].tolist()} are not consecutive")
        start[i] = idx[i, ks[0]] - first
        tw[i, : ks.size] = w[i, ks]
    return first, span, start, tw


def compact_columns(idx: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Keep only the source samples some tap actually weighs: (cols, start, cw).

    cols   uint32 [n]: the distinct source indices with a non-zero weight, ascending;
    start  uint32 [n_out]: each output's first non-zero tap, as an index into `cols`;
    cw     float32 [n_out, t]: its non-zero weights in order, padded with 0 to the widest row.
    A strong bilinear downscale weighs at most 2 samples per output (1920 -> 640 weighs
    exactly one: 1 in 3 columns, every x weight is 0 or 1), so a kernel that filters only
    `cols` vertically does that much less work. Dropping zero-weight taps changes no sum
    (x + 0 * finite == x), so results are bit-identical to the full table's. The kept taps
    of each row must be consecutive in `cols`, which both resize modes guarantee (checked).
    """
    nz = w != 0
    if not nz.any(axis=1).all():
        raise ValueError("every output sample needs a non-zero tap")
    cols = np.unique(idx[nz])
    pos = np.searchsorted(cols, idx)
    width = int(nz.sum(axis=1).max())
    start = np.empty(idx.shape[0], np.uint32)
    cw = np.zeros((idx.shape[0], width), np.float32)
    for i in range(idx.shape[0]):
        ks = np.flatnonzero(nz[i])
        p = pos[i, ks]
        if np.any(p != p[0] + np.arange(p.size)):
            raise ValueError(f"tap row {i}: weighted samples {idx[i, ks].tolist()} are not consecutive")
        start[i] = p[0]
        cw[i, : ks.size] = w[i, ks]
    return cols.astype(np.uint32), start, cw


def tap_tables(resize: str, src_w: int, src_h: int, dst_w: int, dst_h: int) -> tuple[TapTable, TapTable]:
    """(x table, y table) for resizing a src_w x src_h region to dst_w x dst_h, as cv2.resize does."""
    if min(src_w, src_h, dst_w, dst_h) <= 0:
        raise ValueError(f"sizes must be positive, got {src_w}x{src_h} -> {dst_w}x{dst_h}")
    if resize == "bilinear":
        return linear_taps(src_w, dst_w), linear_taps(src_h, dst_h)
    if resize == "area":
        # cv::resize takes the decimation path only when scale_x >= 1 and scale_y >= 1.
        if 1.0 / (dst_w / src_w) >= 1.0 and 1.0 / (dst_h / src_h) >= 1.0:
            return area_taps(src_w, dst_w), area_taps(src_h, dst_h)
        return area_linear_taps(src_w, dst_w), area_linear_taps(src_h, dst_h)
    raise ValueError(f"resize: {resize!r} is not one of 'area', 'bilinear'")


def letterbox_size(spec, rw: int, rh: int) -> tuple[int, int]:  # spec: PreprocessSpec (no import cycle)
    """(width, height) the ROI is resized to: the output size, or with `letterbox` the largest
    aspect-keeping fit, round(rw * s) x round(rh * s), s = min(out_w / rw, out_h / rh)."""
    ow, oh = spec.out_width, spec.out_height
    if not spec.letterbox:
        return ow, oh
    k = min(ow / rw, oh / rh)
    return max(1, min(ow, round(rw * k))), max(1, min(oh, round(rh * k)))
