"""The one image door: every format to the same RGB pixels, bad files to clear reasons."""

import io

import numpy as np
import pytest
from PIL import Image, ImageOps

from pbn_cli.data import imaging
from pbn_cli.data.imaging import ImageReadError, load_rgb, read_header


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 99.0 if mse == 0 else 10 * np.log10(255**2 / mse)


def _painting(w=300, h=200, seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (h // 10 + 1, w // 10 + 1, 3), dtype=np.uint8)
    im = Image.fromarray(base).resize((w, h), Image.Resampling.BICUBIC)
    im.paste((255, 0, 0), (0, 0, w // 4, h // 4))  # a red corner: shows orientation
    return im


def _reference(im: Image.Image, size=64) -> np.ndarray:
    return np.asarray(ImageOps.fit(im.convert("RGB"), (size, size), Image.Resampling.LANCZOS))


def _save(tmp_path, im, name, **kw):
    path = tmp_path / name
    im.save(path, **kw)
    return str(path)


def test_rgb_png_matches_a_plain_fit(tmp_path):
    im = _painting()
    out = load_rgb(_save(tmp_path, im, "a.png"), 64)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    assert _psnr(out, _reference(im)) > 40


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    im = _painting()
    out = load_rgb(_save(tmp_path, im.convert("CMYK"), "c.jpg", quality=95), 64)
    assert _psnr(out, _reference(im.convert("CMYK").convert("RGB"))) > 30


def test_palette_with_transparency_is_composited_on_white(tmp_path):
    im = Image.new("P", (100, 100), 0)
    im.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    im.paste(1, (50, 0, 100, 100))
    out = load_rgb(_save(tmp_path, im, "p.png", transparency=0), 32)
    assert (out[:, :12] == 255).all()  # transparent half: white, not black
    assert tuple(out[5, 25]) == (10, 200, 30)


def test_rgba_and_la_composited_on_white(tmp_path):
    rgba = Image.new("RGBA", (40, 40), (255, 0, 0, 0))
    la = Image.new("LA", (40, 40), (0, 0))
    assert (load_rgb(_save(tmp_path, rgba, "a.png"), 16) == 255).all()
    assert (load_rgb(_save(tmp_path, la, "b.png"), 16) == 255).all()


def test_16_bit_is_scaled_not_clipped(tmp_path):
    grey = np.tile(np.linspace(0, 65535, 128).astype(np.uint16), (128, 1))
    out = load_rgb(_save(tmp_path, Image.fromarray(grey), "g.png"), 128)
    assert out[..., 0].min() == 0 and out[..., 0].max() == 255
    assert (out[..., 0] == out[..., 2]).all()
    expected = np.rint(grey[0].astype(np.float64) * 255 / 65535)
    assert np.abs(out[64, 10:-10, 0] - expected[10:-10]).max() <= 2  # Lanczos ringing aside


def test_32_bit_uses_its_own_range(tmp_path):
    a = np.tile(np.linspace(-1000, 3000, 64, dtype=np.float32), (64, 1))
    out = load_rgb(_save(tmp_path, Image.fromarray(a, "F"), "f.tiff"), 64)
    assert out.min() == 0 and out.max() == 255


def test_exif_orientation_is_applied(tmp_path):
    upright = _painting(200, 300)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated 90 degrees counter-clockwise: rotate back on read
    stored = upright.transpose(Image.Transpose.ROTATE_90)
    out = load_rgb(_save(tmp_path, stored, "e.jpg", quality=95, exif=exif), 64, fit="pad")
    ref = load_rgb(_save(tmp_path, upright, "u.jpg", quality=95), 64, fit="pad")
    assert _psnr(out, ref) > 30
    assert out[12, 20, 0] > 200 and out[12, 20, 1] < 60  # the red corner is top-left


def test_truncated_jpeg_is_rejected_with_a_reason(tmp_path):
    buf = io.BytesIO()
    _painting().save(buf, "JPEG")
    path = tmp_path / "t.jpg"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(ImageReadError, match="^truncated or corrupt image: image file is truncated"):
        load_rgb(str(path), 64)


def test_garbage_and_empty_files(tmp_path):
    (tmp_path / "x.jpg").write_bytes(b"\xff\xd8\xff" + bytes(range(256)) * 4)
    (tmp_path / "z.png").write_bytes(b"")
    with pytest.raises(ImageReadError):
        load_rgb(str(tmp_path / "x.jpg"))
    with pytest.raises(ImageReadError, match="empty file"):
        read_header(str(tmp_path / "z.png"))


def test_draft_decode_is_close_to_a_full_decode(tmp_path):
    im = _painting(2400, 1800, seed=3)
    path = _save(tmp_path, im, "big.jpg", quality=92)
    full = _reference(Image.open(path), 256)
    assert _psnr(load_rgb(path, 256), full) > 28


def test_over_the_bomb_limit_jpeg_and_png(tmp_path, monkeypatch):
    monkeypatch.setattr(imaging, "PILLOW_LIMIT", 10_000)  # a 200x200 image is "huge" here
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)
    im = _painting(200, 200)
    for name in ("b.jpg", "b.png"):
        out = load_rgb(_save(tmp_path, im, name), 32)
        assert out.shape == (32, 32, 3)
    with pytest.raises(ImageReadError, match=r"^image too large: 200x200 is 0 megapixels, over --max-pixels"):
        load_rgb(str(tmp_path / "b.png"), 32, max_pixels=20_000)


def test_pad_letterboxes(tmp_path):
    out = load_rgb(_save(tmp_path, Image.new("RGB", (200, 100), (0, 0, 255)), "w.png"), 64, fit="pad")
    assert (out[:14] == 0).all() and (out[20:44, :, 2] == 255).all()


def test_fast_header_agrees_with_pillow(tmp_path, quirky_set):
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 255, (30, 50, 3), dtype=np.uint8))
    files = [
        _save(tmp_path, rgb, "rgb.jpg"),
        _save(tmp_path, rgb, "prog.jpg", progressive=True),
        _save(tmp_path, rgb.convert("L"), "l.jpg"),
        _save(tmp_path, rgb.convert("CMYK"), "cmyk.jpg"),
        _save(tmp_path, rgb.convert("1"), "bw.png"),
        _save(tmp_path, rgb.convert("LA"), "la.png"),
        _save(tmp_path, rgb.convert("RGBA"), "rgba.png"),
        _save(tmp_path, rgb.convert("P"), "p.png"),
        _save(tmp_path, Image.fromarray(np.zeros((5, 7), np.uint16)), "i16.png"),
        _save(tmp_path, rgb, "x.bmp"),
        _save(tmp_path, rgb, "x.webp"),
        _save(tmp_path, rgb, "x.tiff"),
    ]
    files += [str(p) for p in (quirky_set / "train").iterdir() if p.name != "q_not_an_image.jpg"]
    for path in files:
        with Image.open(path) as im:
            expected = (im.format, im.width, im.height, im.mode)
        h = read_header(path)
        assert (h.format, h.width, h.height, h.mode) == expected, path


def test_threads_reading_at_once_leave_pillows_bomb_check_as_they_found_it(tmp_path):
    """pbn serve decodes uploads in several threads; the door turns Pillow's global check off while it decodes."""
    from concurrent.futures import ThreadPoolExecutor

    path = tmp_path / "p.png"
    _painting(120, 90).save(path)
    limit = Image.MAX_IMAGE_PIXELS
    assert limit is not None
    with ThreadPoolExecutor(8) as pool:
        images = list(pool.map(lambda _: load_rgb(str(path), 64), range(400)))
    assert Image.MAX_IMAGE_PIXELS == limit
    assert all(np.array_equal(im, images[0]) for im in images)
