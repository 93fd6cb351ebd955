"""PNG pictures of images, labels and deformations (Pillow; no plotting library needed).

Every function takes arrays in index order ``(x, y[, z])`` — a 3D volume is shown by one slice
(:func:`middle_slice`: the slice along the last axis through the labels' centre, else the
middle one) — and writes one PNG. A slice is drawn with x to the right and y downwards,
stretched by the voxel spacing so that anatomy keeps its proportions, and enlarged to at least
:data:`MIN_SIZE` pixels.

* :func:`overlay_png` — the image with label colours over it (one panel, or several slices);
* :func:`panels_png` — images side by side with titles (fixed, moving, warped ...);
* :func:`grid_png` — a deformation grid over the fixed image;
* :func:`jacobian_png` — the Jacobian determinant (blue < 1 < red) with folds (det ≤ 0) in black.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["MIN_SIZE", "grid_png", "jacobian_png", "label_colours", "middle_slice", "overlay_png", "panels_png"]

#: smallest height or width of a panel, in pixels
MIN_SIZE = 256

_PALETTE = np.array([
    [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48], [145, 30, 180],
    [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212], [0, 128, 128], [220, 190, 255],
    [170, 110, 40], [255, 250, 200], [128, 0, 0], [170, 255, 195], [128, 128, 0], [255, 215, 180],
], dtype=np.uint8)


def label_colours(n: int) -> np.ndarray:
    """RGB colours (n, 3) uint8 for labels 1..n (a fixed palette, repeated)."""
    return _PALETTE[np.arange(n) % len(_PALETTE)]


def middle_slice(volume_shape: Sequence[int], label: np.ndarray | None = None) -> int | None:
    """The slice index along the last axis to show for a 3D volume (``None`` for 2D): through the
    centre of the labels' foreground when there is one, else the middle."""
    if len(volume_shape) == 2:
        return None
    if label is not None and np.any(label > 0):
        return int(round(float(np.nonzero(label > 0)[-1].mean())))
    return int(volume_shape[-1]) // 2


def _slice(a: np.ndarray, k: int | None) -> np.ndarray:
    return a if k is None or a.ndim == 2 else a[..., k]


def _grey(image: np.ndarray) -> np.ndarray:
    """(x, y) float → (y, x) uint8, scaled between the 1st and 99th percentiles."""
    a = np.asarray(image, dtype=np.float64)
    lo, hi = (np.percentile(a, [1, 99]) if a.size else (0.0, 1.0))
    if hi <= lo:
        lo, hi = float(a.min(initial=0)), float(a.max(initial=0))
    a = np.clip((a - lo) / (hi - lo), 0, 1) if hi > lo else np.zeros_like(a)
    return (a.T * 255).astype(np.uint8)


def _size(shape_xy: Sequence[int], spacing: Sequence[float] | None) -> tuple[int, int]:
    """Display size (width, height) of an (x, y) slice: physical proportions, at least MIN_SIZE."""
    sx, sy = (spacing[0], spacing[1]) if spacing is not None else (1.0, 1.0)
    w, h = shape_xy[0] * sx, shape_xy[1] * sy
    scale = MIN_SIZE / max(min(w, h), 1e-6)
    scale = max(scale, 1.0 / max(sx, sy))
    return max(1, int(round(w * scale))), max(1, int(round(h * scale)))


def _rgb(grey: np.ndarray) -> np.ndarray:
    return np.repeat(grey[..., None], 3, axis=-1)


def _blend(rgb: np.ndarray, label: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """``rgb`` (y, x, 3) with label colours over it; ``label`` (x, y) integer (0: none)."""
    lab = np.asarray(label).T.astype(np.int64)
    out = rgb.astype(np.float64)
    if lab.max(initial=0) > 0:
        colours = label_colours(int(lab.max()))
        fg = lab > 0
        out[fg] = (1 - alpha) * out[fg] + alpha * colours[lab[fg] - 1]
    return out.astype(np.uint8)


def _panel(rgb: np.ndarray, size: tuple[int, int], title: str | None) -> Image.Image:
    img = Image.fromarray(rgb).resize(size, Image.NEAREST)
    if title:
        canvas = Image.new("RGB", (size[0], size[1] + 14), (0, 0, 0))
        canvas.paste(img, (0, 14))
        ImageDraw.Draw(canvas).text((3, 1), title, fill=(255, 255, 255))
        return canvas
    return img


def _row(panels: list[Image.Image], path: str | Path) -> Path:
    width = sum(p.width for p in panels) + 4 * (len(panels) - 1)
    height = max(p.height for p in panels)
    canvas = Image.new("RGB", (width, height), (0, 0, 0))
    x = 0
    for p in panels:
        canvas.paste(p, (x, 0))
        x += p.width + 4
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path


def overlay_png(image: np.ndarray, label: np.ndarray | None, path: str | Path, spacing: Sequence[float] | None = None,
                title: str | None = None) -> Path:
    """The image with its labels coloured over it: a 2D image, or the slice of a 3D volume
    through the labels (:func:`middle_slice`) beside the image without labels."""
    k = middle_slice(image.shape, label)
    grey = _grey(_slice(image, k))
    size = _size(grey.shape[::-1], spacing)
    where = f" (slice z={k})" if k is not None else ""
    panels = [_panel(_rgb(grey), size, (title or "image") + where)]
    if label is not None:
        panels.append(_panel(_blend(_rgb(grey), _slice(label, k)), size, "labels"))
    return _row(panels, path)


def panels_png(images: Sequence[np.ndarray], titles: Sequence[str], path: str | Path,
               spacing: Sequence[float] | None = None, labels: Sequence[np.ndarray | None] | None = None,
               k: int | None = None) -> Path:
    """Images (one grid, index order) side by side, each with its title (and labels if given);
    3D volumes are shown at slice ``k`` of the last axis (default: the middle)."""
    if images[0].ndim == 3 and k is None:
        k = images[0].shape[-1] // 2
    out = []
    for i, (img, title) in enumerate(zip(images, titles)):
        grey = _grey(_slice(img, k))
        rgb = _rgb(grey)
        lab = labels[i] if labels is not None else None
        if lab is not None:
            rgb = _blend(rgb, _slice(lab, k))
        out.append(_panel(rgb, _size(grey.shape[::-1], spacing), title + (f" (z={k})" if k is not None else "")))
    return _row(out, path)


def grid_png(image: np.ndarray, displacement: np.ndarray, path: str | Path, spacing: Sequence[float] | None = None,
             step: int | None = None, k: int | None = None) -> Path:
    """A deformation grid over ``image`` (x, y[, z]): the lines of every ``step``-th voxel row and
    column, each point moved by the in-plane part of ``displacement`` (n, x, y[, z]), in voxels
    of the image's grid (``x + u(x)`` is where the moving image is read)."""
    if image.ndim == 3 and k is None:
        k = image.shape[-1] // 2
    grey = _grey(_slice(image, k))
    nx, ny = grey.shape[1], grey.shape[0]
    size = _size((nx, ny), spacing)
    img = Image.fromarray(_rgb(grey)).resize(size, Image.BILINEAR)
    draw = ImageDraw.Draw(img)
    ux, uy = _slice(displacement[0], k), _slice(displacement[1], k)
    step = step or max(1, min(nx, ny) // 16)
    fx, fy = size[0] / nx, size[1] / ny

    def point(i: int, j: int) -> tuple[float, float]:
        return ((i + ux[i, j] + 0.5) * fx, (j + uy[i, j] + 0.5) * fy)

    for j in range(0, ny, step):
        draw.line([point(i, j) for i in range(nx)], fill=(255, 200, 0), width=1)
    for i in range(0, nx, step):
        draw.line([point(i, j) for j in range(ny)], fill=(255, 200, 0), width=1)
    return _row([_panel(np.asarray(img), size, "deformation grid" + (f" (z={k})" if k is not None else ""))], path)


def jacobian_png(det: np.ndarray, path: str | Path, spacing: Sequence[float] | None = None, k: int | None = None,
                 limit: float = 2.0) -> Path:
    """The Jacobian determinant (x, y[, z]) in colour — blue below 1 (shrinking), white at 1, red
    above (growing), saturated at ``1/limit`` and ``limit`` on a log scale — with folds
    (det ≤ 0) in black; the title gives their share of the slice."""
    if det.ndim == 3 and k is None:
        k = det.shape[-1] // 2
    d = np.asarray(_slice(det, k), dtype=np.float64).T
    t = np.clip(np.log(np.clip(d, 1e-6, None)) / np.log(limit), -1, 1)  # -1 .. 1
    rgb = np.empty(d.shape + (3,))
    rgb[..., 0] = np.where(t < 0, 1 + t, 1.0)
    rgb[..., 1] = 1 - np.abs(t)
    rgb[..., 2] = np.where(t > 0, 1 - t, 1.0)
    rgb = (rgb * 255).astype(np.uint8)
    folds = d <= 0
    rgb[folds] = 0
    title = f"det J (folds {100 * folds.mean():.2f} %)" + (f" z={k}" if k is not None else "")
    return _row([_panel(rgb, _size(d.shape[::-1], spacing), title)], path)
