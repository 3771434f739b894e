"""Small numpy rasteriser for env frames, and an episode-to-GIF helper.

Environments draw copy 0 into an ``(H, W, 3)`` uint8 array with these primitives (no window,
no display server), so ``env.render()`` works headless and in tests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np


def canvas(height: int, width: int, color: Sequence[int] = (255, 255, 255)) -> np.ndarray:
    """A blank ``(H, W, 3)`` uint8 image."""
    img = np.empty((height, width, 3), dtype=np.uint8)
    img[:] = np.asarray(color, dtype=np.uint8)
    return img


def draw_disc(img: np.ndarray, cx: float, cy: float, radius: float, color: Sequence[int], outline: Sequence[int] | None = (0, 0, 0)) -> None:
    """Fill a disc centred at pixel ``(cx, cy)`` (x right, y down), with an optional 1-px outline."""
    h, w = img.shape[:2]
    r = max(radius, 1.0)
    x0, x1 = int(max(0, np.floor(cx - r - 1))), int(min(w, np.ceil(cx + r + 2)))
    y0, y1 = int(max(0, np.floor(cy - r - 1))), int(min(h, np.ceil(cy + r + 2)))
    if x0 >= x1 or y0 >= y1:
        return
    yy, xx = np.mgrid[y0:y1, x0:x1]
    d2 = (xx + 0.5 - cx) ** 2 + (yy + 0.5 - cy) ** 2
    patch = img[y0:y1, x0:x1]
    patch[d2 <= r * r] = np.asarray(color, dtype=np.uint8)
    if outline is not None:
        ring = (d2 <= r * r) & (d2 >= (r - 1.2) ** 2)
        patch[ring] = np.asarray(outline, dtype=np.uint8)


def fill_rect(img: np.ndarray, x0: int, y0: int, x1: int, y1: int, color: Sequence[int]) -> None:
    """Fill the pixel rectangle ``[x0, x1) x [y0, y1)`` (clipped to the image)."""
    h, w = img.shape[:2]
    img[max(0, y0) : min(h, y1), max(0, x0) : min(w, x1)] = np.asarray(color, dtype=np.uint8)


def draw_line(img: np.ndarray, x0: float, y0: float, x1: float, y1: float, color: Sequence[int]) -> None:
    """A 1-px line between two pixel positions."""
    n = int(max(abs(x1 - x0), abs(y1 - y0))) + 1
    xs = np.clip(np.round(np.linspace(x0, x1, n)).astype(int), 0, img.shape[1] - 1)
    ys = np.clip(np.round(np.linspace(y0, y1, n)).astype(int), 0, img.shape[0] - 1)
    img[ys, xs] = np.asarray(color, dtype=np.uint8)


def write_gif(frames: Iterable[np.ndarray], path: str | Path, fps: int = 10) -> Path:
    """Write ``(H, W, 3)`` uint8 frames as a looping GIF at ``path``; returns the path."""
    from PIL import Image

    images = [Image.fromarray(np.asarray(f, dtype=np.uint8)) for f in frames]
    if not images:
        raise ValueError("write_gif: no frames to write")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
    tmp.replace(path)
    return path


def record_episode(env, policy: Callable[[dict], dict] | None = None, max_steps: int | None = None) -> list[np.ndarray]:
    """Frames of one episode of copy 0: ``policy(obs) -> actions`` (random legal actions if None).

    Stops when copy 0 finishes or after ``max_steps`` (default: the env's ``max_steps``).
    """
    from maestro.envs.api import random_actions

    obs = env.observe()
    frames = [env.render()]
    for _ in range(max_steps or env.spec.max_steps):
        actions = policy(obs) if policy is not None else random_actions(env)
        out = env.step(actions)
        if bool(out.done[0]):
            break
        frames.append(env.render())
        obs = out.obs
    return frames
