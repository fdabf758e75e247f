"""Result files for people: image grids, loss curves, Markdown and self-contained HTML."""
from __future__ import annotations

import base64
import html
import math
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from rayda.classes import ClassSet

SEPARATOR_PX = 2


def _to_numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


def _prepare(path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def colorize(label, classes: ClassSet) -> np.ndarray:
    """[H, W] class ids (array or tensor) -> uint8 [H, W, 3]; ignore pixels black."""
    return classes.colorize(_to_numpy(label))


def to_uint8_image(x) -> np.ndarray:
    """Float [3, H, W] in [-1, 1] (array or tensor) -> uint8 [H, W, 3]."""
    x = _to_numpy(x).astype(np.float32)
    return np.clip(np.rint((x + 1.0) * 127.5), 0, 255).astype(np.uint8).transpose(1, 2, 0)


def save_grid(path, rows: Sequence[Sequence[np.ndarray]], titles: Sequence[str] | None = None,
              scale: int = 1) -> None:
    """PNG grid of uint8 [H, W, 3] images, white separators, optional column-title strip.

    Every cell takes the size of rows[0][0] times `scale` (others are resized, nearest),
    so columns line up under their titles.
    """
    first = np.asarray(rows[0][0])
    cell_h, cell_w = first.shape[0] * scale, first.shape[1] * scale
    num_cols = max(len(r) for r in rows)
    font = ImageFont.load_default()
    title_h = 0
    if titles:
        top, bottom = ImageDraw.Draw(Image.new("RGB", (1, 1))).textbbox((0, 0), "Ag", font=font)[1::2]
        title_h = bottom - top + 6 + SEPARATOR_PX
    width = num_cols * cell_w + (num_cols - 1) * SEPARATOR_PX
    height = title_h + len(rows) * cell_h + (len(rows) - 1) * SEPARATOR_PX
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    for col, title in enumerate(titles or []):
        draw.text((col * (cell_w + SEPARATOR_PX) + 3, 3), title, fill="black", font=font)
    for r, row in enumerate(rows):
        for col, img in enumerate(row):
            cell = Image.fromarray(np.asarray(img, dtype=np.uint8)).convert("RGB")
            if cell.size != (cell_w, cell_h):
                cell = cell.resize((cell_w, cell_h), Image.NEAREST)
            canvas.paste(cell, (col * (cell_w + SEPARATOR_PX), title_h + r * (cell_h + SEPARATOR_PX)))
    canvas.save(_prepare(path), format="PNG")


def save_loss_curves(path, history: dict[str, Sequence[tuple[int, float]]]) -> None:
    """PNG plot of each named series vs step; log y when positive and spanning > 2 decades."""
    # A bare Figure on an Agg canvas: no pyplot, so the global backend is left alone.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    values = []
    for name, points in history.items():
        if points:
            steps, ys = zip(*points)
            ax.plot(steps, ys, label=name)
            values.extend(y for y in ys if math.isfinite(y))
    if values and min(values) > 0 and max(values) / min(values) > 100:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.grid(True, alpha=0.3)
    if ax.lines:
        ax.legend()
    fig.tight_layout()
    fig.savefig(_prepare(path), format="png")


def write_markdown(path, title: str, sections: Sequence[tuple[str, str]]) -> None:
    """`# title` then one `## heading` per (heading, Markdown body) section."""
    parts = [f"# {title}\n"] + [f"## {heading}\n\n{body.strip()}\n" for heading, body in sections]
    _prepare(path).write_text("\n".join(parts), encoding="utf-8")


def write_html(path, title: str, sections: Sequence[tuple[str, str]],
               images: Sequence[tuple[str, str | Path]] = ()) -> None:
    """Single-file HTML: section bodies verbatim in <pre>, PNGs inlined as base64 data URIs."""
    esc = html.escape
    parts = [f"<!doctype html>\n<html><head><meta charset='utf-8'><title>{esc(title)}</title></head>",
             f"<body>\n<h1>{esc(title)}</h1>"]
    parts += [f"<h2>{esc(heading)}</h2>\n<pre>{esc(body)}</pre>" for heading, body in sections]
    for caption, png_path in images:
        data = base64.b64encode(Path(png_path).read_bytes()).decode("ascii")
        parts.append(f"<figure><img src='data:image/png;base64,{data}' alt='{esc(caption)}'>"
                     f"<figcaption>{esc(caption)}</figcaption></figure>")
    parts.append("</body></html>\n")
    _prepare(path).write_text("\n".join(parts), encoding="utf-8")
