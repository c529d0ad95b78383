"""Images whose header claims too many pixels: one line naming the file, its size and the limit, on every path.

The huge image is a 1x1 PNG whose header says 30000 x 30000 (900 megapixels): a few bytes that no reader may
decode. Pillow refuses it before saying its width and height, so the message gives its pixels; an image under
Pillow's own limit but over ours is named with its width and height.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from cli.otseg_cli import main as otseg_main
from otseg.data.datasets import FolderDataset
from otseg.data.readers import MAX_PIXELS, ImageTooLargeError, load_image, load_label, open_image
from otseg.serve import RequestError, ServeLimits, read_upload
from tests.huge_image import huge_png


def _png(path: Path, size: tuple[int, int]) -> Path:
    Image.new("RGB", size, (200, 30, 30)).save(path)
    return path


def _one_error_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in output, output
    return lines[0]


def test_the_huge_header_is_refused_before_decoding_and_pillows_check_stays(tmp_path):
    pillow_limit = Image.MAX_IMAGE_PIXELS
    path = huge_png(tmp_path / "huge.png")
    with pytest.raises(Image.DecompressionBombError):  # the file is what the issue describes
        Image.open(path)
    for read in (load_image, load_label, open_image):
        with pytest.raises(ImageTooLargeError) as err:
            read(path)
        message = str(err.value)
        assert "\n" not in message and str(path) in message and "900 megapixels" in message
        assert f"limit of {MAX_PIXELS / 1e6:g} megapixels" in message and "--max-megapixels 900" in message
        assert err.value.pixels == 30000 * 30000 and err.value.limit == MAX_PIXELS
    assert Image.MAX_IMAGE_PIXELS == pillow_limit  # the default limit leaves Pillow's check as it was


def test_an_image_over_the_limit_is_named_with_its_width_and_height(tmp_path):
    path = _png(tmp_path / "photo.png", (120, 50))
    with pytest.raises(ImageTooLargeError, match=r"photo\.png: 120x50 pixels \(0\.006 megapixels\), over the limit"):
        load_image(path, max_pixels=5000)
    assert load_image(path, max_pixels=6000).shape == (3, 50, 120)


def test_raising_the_limit_raises_pillows_check_but_never_turns_it_off(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow refuses above 2000 pixels
    path = _png(tmp_path / "photo.png", (100, 100))
    with pytest.raises(ImageTooLargeError, match=r"photo\.png: 0\.01 megapixels, over the limit of 0\.001 megapixels"):
        load_image(path, max_pixels=1000)
    assert Image.MAX_IMAGE_PIXELS == 1000
    assert load_image(path, max_pixels=20_000).shape == (3, 100, 100)
    assert Image.MAX_IMAGE_PIXELS == 10_000  # Pillow now refuses only above the limit asked for


def test_predict_refuses_a_huge_image_in_one_line(tiny_model_file, tmp_path):
    huge = huge_png(tmp_path / "huge.png")
    args = ["predict", str(huge), "--model", str(tiny_model_file), "--classes", "a,b", "--out-dir", str(tmp_path)]
    result = CliRunner().invoke(otseg_main, args)
    line = _one_error_line(result.output)
    assert result.exit_code == 1 and str(huge) in line and "900 megapixels" in line and "--max-megapixels" in line
    photo = _png(tmp_path / "photo.png", (64, 48))
    result = CliRunner().invoke(otseg_main, [*args[:1], str(photo), *args[2:], "--max-megapixels", "0.002"])
    line = _one_error_line(result.output)
    assert "64x48 pixels" in line and "limit of 0.002 megapixels" in line
    result = CliRunner().invoke(otseg_main, [*args[:1], str(photo), *args[2:], "--max-megapixels", "0.004"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "photo_labels.png").is_file()


def _folder_dataset(root: Path) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    (root / "classes.txt").write_text("sky\ntree\n")
    huge_png(root / "images" / "huge.png")
    Image.fromarray(np.zeros((4, 4), dtype=np.uint8)).save(root / "labels" / "huge.png")
    return root


def test_eval_refuses_a_huge_dataset_image_in_one_line(tiny_model_file, tmp_path):
    root = _folder_dataset(tmp_path / "data")
    with pytest.raises(ImageTooLargeError, match="900 megapixels"):
        FolderDataset.from_root(root)[0]
    args = ["eval", "--model", str(tiny_model_file), "--dataset", "folder", "--data-root", str(root)]
    result = CliRunner().invoke(otseg_main, [*args, "--mode", "whole"])
    line = _one_error_line(result.output)
    assert result.exit_code == 1 and str(root / "images" / "huge.png") in line and "--max-megapixels" in line


def test_the_page_refuses_a_huge_upload_with_its_size_and_the_servers_limit(tmp_path):
    with pytest.raises(RequestError) as err:
        read_upload(huge_png(tmp_path / "huge.png"), ServeLimits(max_pixels=40_000_000))
    assert str(err.value) == (
        "huge.png has 900 megapixels; this server takes at most 40 megapixels: upload a smaller image."
    )
    with pytest.raises(RequestError, match=r"wide\.png has 400x300 pixels; this server takes at most 0\.1 megapixels"):
        read_upload(_png(tmp_path / "wide.png", (400, 300)), ServeLimits(max_pixels=100_000))
