import base64
import subprocess
import sys

import numpy as np
import torch
from PIL import Image

from rayda.classes import CITYSCAPES_19
from rayda.report import (colorize, save_grid, save_loss_curves, to_uint8_image, write_html,
                          write_markdown)


def solid(h, w, rgb):
    return np.full((h, w, 3), rgb, np.uint8)


RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)
ROWS = [[solid(4, 5, RED), solid(4, 5, GREEN)], [solid(2, 3, BLUE), solid(4, 5, RED)]]


def test_grid_layout_and_pixels(tmp_path):
    save_grid(tmp_path / "grid.png", ROWS, scale=2)
    grid = np.asarray(Image.open(tmp_path / "grid.png"))
    # cells 8x10 after scale 2, 2-px separators
    assert grid.shape == (8 + 2 + 8, 10 + 2 + 10, 3)
    assert tuple(grid[0, 0]) == RED
    assert tuple(grid[7, 12]) == GREEN
    assert tuple(grid[0, 10]) == WHITE and tuple(grid[8, 0]) == WHITE
    assert tuple(grid[17, 9]) == BLUE  # 2x3 image resized to fill the whole cell


def test_grid_title_strip(tmp_path):
    save_grid(tmp_path / "grid.png", ROWS, titles=["image", "prediction"])
    grid = np.asarray(Image.open(tmp_path / "grid.png"))
    strip = grid.shape[0] - (4 + 2 + 4)
    assert strip > 0 and grid.shape[1] == 5 + 2 + 5
    assert (grid[:strip] != 255).any()  # some title text was drawn
    assert tuple(grid[strip, 0]) == RED and tuple(grid[-1, 0]) == BLUE


def test_image_conversions():
    image = to_uint8_image(torch.tensor([[[-1.0, 1.0]], [[0.0, 0.0]], [[1.0, -1.0]]]))
    assert image.dtype == np.uint8 and image.shape == (1, 2, 3)
    np.testing.assert_array_equal(image, [[[0, 128, 255], [255, 128, 0]]])
    colours = colorize(torch.tensor([[0, 255]]), CITYSCAPES_19)
    np.testing.assert_array_equal(colours, [[[128, 64, 128], [0, 0, 0]]])


def test_loss_curves(tmp_path):
    history = {"loss": [(i, 10.0 ** -i) for i in range(5)], "miou": [(0, 0.1), (4, 0.5)]}
    save_loss_curves(tmp_path / "curves.png", history)
    with Image.open(tmp_path / "curves.png") as im:
        assert im.format == "PNG" and im.size == (700, 400)


def test_import_has_no_matplotlib_side_effects():
    code = "import sys, rayda.report; assert 'matplotlib' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_markdown_and_html(tmp_path):
    sections = [("Results", "| run | mIoU |\n|---|---:|\n| a<b | 41.3 |")]
    write_markdown(tmp_path / "r.md", "Report", sections)
    assert (tmp_path / "r.md").read_text().startswith("# Report\n\n## Results\n\n| run | mIoU |")
    save_grid(tmp_path / "grid.png", ROWS)
    write_html(tmp_path / "r.html", "Report", sections, [("grid", tmp_path / "grid.png")])
    text = (tmp_path / "r.html").read_text()
    assert "a&lt;b" in text
    data = text.split("data:image/png;base64,")[1].split("'")[0]
    assert base64.b64decode(data) == (tmp_path / "grid.png").read_bytes()
