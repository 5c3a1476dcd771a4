"""Image bytes, base64 text and arrays to 28x28, and a clear ImageError for every bad input."""

from __future__ import annotations

import base64
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from badfiles import bomb, encode, png_header, truncated
from PIL import Image, ImageDraw

from fmnist_lib import masking, preprocess
from fmnist_lib.data import load_fashion_mnist
from fmnist_lib.preprocess import ImageError


@pytest.fixture(scope="module")
def sample() -> np.ndarray:
    return load_fashion_mnist().x_test[0]


def test_a_dataset_image_survives_png_and_base64_exactly(sample):
    png = preprocess.encode_png(sample)
    assert np.array_equal(preprocess.prepare(png), sample)
    assert np.array_equal(preprocess.prepare(base64.b64encode(png).decode()), sample)
    assert np.array_equal(preprocess.prepare(sample), sample)
    assert np.array_equal(preprocess.prepare(sample.reshape(-1).tolist()), sample)


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP", "GIF", "BMP"])
def test_every_supported_format_decodes_close_to_the_original(sample, fmt):
    data = encode(Image.fromarray(sample), fmt)
    error = np.abs(preprocess.prepare(data).astype(int) - sample).mean()
    assert error < 6, f"{fmt}: mean absolute error {error:.1f} grey levels"


def test_colour_and_large_images_become_28x28_grey(sample):
    big = Image.fromarray(sample).resize((280, 280), Image.Resampling.NEAREST).convert("RGB")
    out = preprocess.prepare(encode(big, "PNG"))
    assert out.shape == (28, 28) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - sample).mean() < 3


BAD_FILES = {
    "empty": (lambda: b"", "The file is empty"),
    "text": (lambda: b"just some text, not a picture", "not an image"),
    "truncated-png": (lambda: truncated("PNG"), "damaged or truncated"),
    "truncated-jpeg": (lambda: truncated("JPEG"), "damaged or truncated"),
    "64-megapixels": (lambda: bomb(8000), "too large"),  # our own limit
    "225-megapixels": (lambda: bomb(15000), "too large"),  # Pillow's guard
    "900-megapixels": (lambda: png_header(30000, 30000), "too large to decode"),
    "wide-strip": (lambda: png_header(200_000, 300), "too large"),  # 60 Mpx, one row high
    "tiff": (lambda: encode(Image.new("L", (28, 28)), "TIFF"), "not supported"),
}


@pytest.mark.parametrize("case", BAD_FILES)
def test_bad_files_raise_one_clear_error(case):
    make, message = BAD_FILES[case]
    with pytest.raises(ImageError, match=message):
        preprocess.prepare(make())


@pytest.mark.parametrize(
    "array, message",
    [
        (np.zeros((27, 28)), "shape"),
        (np.zeros((3, 28, 28)), "shape"),
        (np.full((28, 28), 300.0), "between 0 and 255"),
        (np.full((28, 28), -1.0), "between 0 and 255"),
        (np.full((28, 28), np.nan), "between 0 and 255"),
        ([["a"] * 28] * 28, "not numbers"),
    ],
)
def test_bad_arrays_raise_one_clear_error(array, message):
    with pytest.raises(ImageError, match=message):
        preprocess.prepare(array)


def test_text_that_is_not_base64_is_refused():
    with pytest.raises(ImageError, match="not base64"):
        preprocess.prepare("this is ** not base64")
    with pytest.raises(ImageError, match="No image"):
        preprocess.prepare(None)


# --- the Fashion-MNIST conversion ----------------------------------------------------------


def product_photo(sample: np.ndarray, size: int = 280, canvas=(520, 400), at=(60, 90)):
    """The sample as a dark item on a light background, enlarged and off-centre."""
    item = Image.fromarray(255 - sample).resize((size, size), Image.Resampling.BICUBIC)
    photo = Image.new("L", canvas, 255)
    photo.paste(item, at)
    return photo


def close_to(out: np.ndarray, sample: np.ndarray, bound: float) -> bool:
    return float(np.abs(out.astype(int) - sample).mean()) < bound


def test_a_product_photo_comes_back_as_its_fashion_mnist_image(sample):
    steps = preprocess.fashion_mnist_steps(product_photo(sample))
    assert list(steps) == [
        "grey",
        "backdrop",
        "mask",
        "dark item on light",
        "trimmed",
        "resized",
        "centred",
        "negated",
        "stretched",
    ]
    assert list(preprocess.fashion_mnist_steps(product_photo(sample), segment=False)) == [
        "grey",
        "dark item on light",
        "trimmed",
        "resized",
        "centred",
        "negated",
        "stretched",
    ]
    assert max(steps["resized"].shape) == 28
    assert close_to(steps["stretched"], sample, 8)
    # The naive path squeezes the whole photo, background and all, without negating.
    assert not close_to(preprocess.to_28x28(product_photo(sample)), sample, 40)


def test_a_light_item_on_a_dark_background_is_recognised(sample):
    dark = Image.fromarray(255 - np.asarray(product_photo(sample)))
    steps = preprocess.fashion_mnist_steps(dark)
    assert close_to(steps["stretched"], sample, 8)


def test_a_fashion_mnist_image_is_left_as_it_is(sample):
    steps = preprocess.fashion_mnist_steps(Image.fromarray(sample))
    assert list(steps) == ["grey", "as it is"]
    assert np.array_equal(preprocess.prepare(preprocess.encode_png(sample)), sample)


def _roundtrip(image: Image.Image, fmt: str, **options) -> np.ndarray:
    return preprocess.prepare(encode(image, fmt, **options))


def test_exif_orientation_is_applied(sample):
    upright = product_photo(sample).convert("RGB")
    # Stored rotated, with the EXIF tag that tells viewers to rotate it back.
    stored = upright.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    rotated = _roundtrip(stored, "JPEG", exif=exif, quality=95)
    assert close_to(rotated, _roundtrip(upright, "JPEG", quality=95), 3)


def test_transparency_is_composited_on_white(sample):
    photo = product_photo(sample)
    rgba = photo.convert("RGBA")
    rgba.putalpha(Image.fromarray(np.where(np.asarray(photo) > 250, 0, 255).astype(np.uint8)))
    # The transparent pixels' colour is black: compositing must hide it.
    rgba = Image.fromarray(np.where(np.asarray(rgba)[..., 3:] == 0, 0, np.asarray(rgba)))
    assert close_to(_roundtrip(rgba, "PNG"), sample, 8)


@pytest.mark.parametrize("mode", ["P", "CMYK", "I;16", "LA", "1"])
def test_every_image_mode_is_converted(sample, mode):
    photo = product_photo(sample)
    if mode == "I;16":
        image = Image.fromarray(np.asarray(photo, dtype=np.uint16) * 257)  # 16-bit grey
        assert image.mode == "I;16"
    elif mode == "P":
        image = photo.convert("RGB").convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    else:
        image = photo.convert("RGB").convert(mode)
    out = _roundtrip(image, "JPEG" if mode == "CMYK" else "PNG")
    assert out.shape == (28, 28) and out.dtype == np.uint8
    assert close_to(out, sample, 30 if mode == "1" else 10)


def test_an_animation_gives_its_first_frame(sample):
    first = product_photo(sample).convert("RGB")
    other = Image.new("RGB", first.size, (255, 255, 255))
    ImageDraw.Draw(other).rectangle((10, 10, 300, 300), fill=(0, 0, 0))
    gif = encode(first, "GIF", save_all=True, append_images=[other], duration=100, loop=0)
    assert close_to(preprocess.prepare(gif), sample, 10)


@pytest.mark.parametrize("colour", [0, 128, 255])
def test_a_blank_picture_is_refused(colour):
    with pytest.raises(ImageError, match="blank"):
        preprocess.prepare(encode(Image.new("RGB", (300, 200), (colour,) * 3), "PNG"))


# --- real backdrops: gradient, vignette, tint, shadow -------------------------------------------


def studio_photo(sample: np.ndarray, shadow: float = 0.2, tilt_light: bool = True, angle=0):
    """The sample as a coloured item on a backdrop lit from above (grey at the top, white at
    the bottom, darker corners, a warm tint) with a soft shadow below and right of it; also
    where the item is."""
    from scipy import ndimage

    size, height, width, top, left = 280, 480, 560, 90, 110
    coverage = np.zeros((height, width))
    item = Image.fromarray(sample).resize((size, size), Image.Resampling.BICUBIC)
    item = item.rotate(angle, Image.Resampling.BICUBIC)
    coverage[top : top + size, left : left + size] = np.asarray(item) / 255
    cast = ndimage.gaussian_filter(ndimage.shift(coverage, (40, 30), order=1), 12)
    y = np.linspace(0, 1, height)[:, None]
    x = np.linspace(-1, 1, width)[None, :]
    light = (0.78 + 0.22 * y if tilt_light else 1.0) * (1 - 0.12 * (x**2 + (2 * y - 1) ** 2))
    backdrop = np.array([0.97, 0.94, 0.9]) * (1 - shadow * cast / max(cast.max(), 1e-9))[..., None]
    fabric = np.array([0.55, 0.15, 0.2])  # a red garment
    amount = coverage[..., None]
    pixels = 255 * light[..., None] * ((1 - amount) * backdrop + amount * fabric)
    return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8)), coverage > 0.05


def test_the_backdrop_model_follows_a_gradient_and_a_vignette(sample):
    photo, _ = studio_photo(np.zeros_like(sample), shadow=0)
    rgb = np.asarray(photo, dtype=np.uint8)
    model = preprocess.backdrop_model(rgb)
    assert np.abs(model - rgb).max() < 4  # a quadratic surface, to a few grey levels
    # The picture spans 50 grey levels from top to bottom: no single level would do.
    assert np.ptp(rgb[..., 1]) > 50


def test_the_mask_finds_the_item_and_leaves_its_shadow_out(sample):
    photo, truth = studio_photo(sample)
    steps = preprocess.fashion_mnist_steps(photo)
    mask = steps["mask"] > 0
    small = np.asarray(Image.fromarray(truth).resize(mask.shape[::-1]))
    rows, cols = np.nonzero(mask)
    true_rows, true_cols = np.nonzero(small)
    assert abs(rows.min() - true_rows.min()) <= 2 and abs(cols.min() - true_cols.min()) <= 2
    # The shadow falls below and right of the item. The mask enters it only as deep as the
    # item's soft edge is grown, while what differs from the backdrop reaches much further.
    depth = round(masking.EDGE_DEPTH * max(mask.shape))
    assert rows.max() - true_rows.max() <= depth and cols.max() - true_cols.max() <= depth
    rgb = np.asarray(preprocess._working_copy(photo))
    differs = np.abs(1 - rgb / preprocess.backdrop_model(rgb)).max(axis=2) > 0.05
    shadow = differs & ~small
    shadow_rows, _ = np.nonzero(shadow)
    assert shadow_rows.max() - true_rows.max() > 1.5 * depth
    assert (shadow & mask).sum() < 0.5 * shadow.sum()
    assert (mask & small).sum() / (mask | small).sum() > 0.75


def test_a_studio_photo_comes_back_close_to_its_fashion_mnist_image(sample):
    photo, _ = studio_photo(sample)
    converted = _roundtrip(photo.convert("RGB"), "JPEG", quality=80)
    # The dataset's own recipe alone keeps the whole picture: the border is not one grey.
    recipe = preprocess.to_fashion_mnist(photo, segment=False)
    error = np.abs(converted.astype(int) - sample).mean()
    assert error < 0.6 * np.abs(recipe.astype(int) - sample).mean()


def test_a_gradient_with_nothing_on_it_is_refused_as_blank(sample):
    photo, _ = studio_photo(np.zeros_like(sample), shadow=0)
    noise = np.random.default_rng(0).normal(0, 2, (480, 560, 3))
    noisy = np.clip(np.asarray(photo, dtype=np.float64) + noise, 0, 255).astype(np.uint8)
    with pytest.raises(ImageError, match="blank"):
        preprocess.prepare(encode(Image.fromarray(noisy), "JPEG"))


def test_an_item_touching_the_edges_keeps_its_backdrop(sample):
    # A dataset image enlarged: its item touches the left and right edges.
    big = Image.fromarray(sample).resize((280, 280), Image.Resampling.NEAREST).convert("RGB")
    steps = preprocess.fashion_mnist_steps(big)
    assert steps["backdrop"].min() >= 250
    assert close_to(steps["stretched"], sample, 3)


def test_a_large_photo_is_converted_at_the_working_size(sample):
    photo, _ = studio_photo(sample)
    large = photo.resize((2800, 2400), Image.Resampling.BICUBIC)
    steps = preprocess.fashion_mnist_steps(large)
    assert max(steps["grey"].shape) == preprocess.WORK_SIZE
    assert close_to(steps["stretched"], preprocess.to_fashion_mnist(photo), 6)


def _silhouette(image: np.ndarray, angle: float = 0) -> np.ndarray:
    big = Image.fromarray(image).resize((280, 280), Image.Resampling.BICUBIC)
    mask = Image.fromarray((np.asarray(big) > 20).astype(np.uint8) * 255)
    return np.asarray(mask.rotate(angle, Image.Resampling.BILINEAR, expand=True)) > 127


def test_a_leaning_garment_is_turned_upright_and_shoes_are_left_alone():
    data = load_fashion_mnist()
    upright, leaning, shoes = [], [], []
    for class_id in range(10):
        for index in np.flatnonzero(data.y_test == class_id)[:10]:
            image = data.x_test[index]
            upright.append(preprocess.tilt(_silhouette(image)))
            if class_id in (5, 7, 9):  # sandals, sneakers, ankle boots: not symmetric
                shoes.append(preprocess.tilt(_silhouette(image, 5)))
            elif class_id in (0, 2, 3, 4, 6):  # tops, dresses, coats: symmetric
                leaning.append(preprocess.tilt(_silhouette(image, 5)))
    # Dataset images stand upright: almost never turned.
    assert np.mean(np.array(upright) == 0) >= 0.95
    # A symmetric garment leaning 5 degrees is found leaning 4 to 6 degrees, most of the time.
    assert np.mean(np.abs(np.array(leaning) - 5) <= 1) >= 0.8
    assert np.mean(np.array(shoes) == 0) >= 0.9


def test_the_conversion_straightens_a_tilted_studio_photo():
    data = load_fashion_mnist()
    shirt = data.x_test[np.flatnonzero(data.y_test == 6)[0]]
    straight = preprocess.to_fashion_mnist(studio_photo(shirt)[0])
    steps = preprocess.fashion_mnist_steps(studio_photo(shirt, angle=6)[0])
    assert 5 <= preprocess.tilt(steps["mask"] > 0) <= 7
    assert close_to(steps["stretched"], straight, 12)


def test_a_phone_jpeg_with_a_second_picture_is_read_as_its_first(sample):
    """Phones add a depth map or a second view (Multi-Picture Format): Pillow opens such a
    JPEG as "MPO"; its first frame is the photo."""
    photo = product_photo(sample).convert("RGB")
    depth = Image.new("RGB", photo.size, (0, 0, 0))
    mpo = encode(photo, "MPO", save_all=True, append_images=[depth], quality=95)
    assert Image.open(io.BytesIO(mpo)).format == "MPO"
    assert np.array_equal(preprocess.prepare(mpo), _roundtrip(photo, "JPEG", quality=95))


OTHER_FORMATS = {
    "TIFF": lambda: encode(Image.new("L", (28, 28)), "TIFF"),
    "HEIC": lambda: b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64),
}


@pytest.mark.parametrize("name", OTHER_FORMATS)
def test_a_known_other_format_is_named(name):
    with pytest.raises(ImageError, match=f"{name}.* not supported: send PNG, JPEG"):
        preprocess.decode(OTHER_FORMATS[name]())


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "P", "1", "I;16"])
def test_a_large_picture_is_decoded_reduced_and_converts_as_the_small_one(sample, mode):
    photo = product_photo(sample).convert("RGB")  # about 300 pixels
    large = photo.resize((photo.width * 10, photo.height * 10), Image.Resampling.NEAREST)
    if mode == "I;16":
        large = Image.fromarray(np.asarray(large.convert("L"), dtype=np.uint16) * 257)
    elif mode == "P":
        large = large.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    else:
        large = large.convert(mode)
    picture = preprocess.decode(encode(large, "PNG"))
    assert preprocess.DECODE_SIZE <= max(picture.size) < 2 * preprocess.DECODE_SIZE
    tolerance = 30 if mode == "1" else 10
    small = preprocess.prepare(encode(photo, "PNG"))
    assert close_to(preprocess.to_fashion_mnist(picture), small, tolerance)


def test_a_large_jpeg_is_decoded_at_a_fraction_of_its_size(sample):
    photo = product_photo(sample).convert("RGB")
    large = photo.resize((photo.width * 13, photo.height * 13), Image.Resampling.BICUBIC)
    assert large.width * large.height > preprocess.MAX_FULL_PIXELS  # only a JPEG may be this big
    picture = preprocess.decode(encode(large, "JPEG", quality=90))
    assert preprocess.DECODE_SIZE <= max(picture.size) < 2 * preprocess.DECODE_SIZE
    assert close_to(preprocess.to_fashion_mnist(picture), sample, 10)


def test_formats_decoded_at_full_size_have_a_lower_cap():
    with pytest.raises(ImageError, match="at most 25 megapixels for PNG"):
        preprocess.decode(png_header(6000, 5000))


MEASURE_PEAK = """
import sys
from fmnist_lib import preprocess
data = open(sys.argv[1], "rb").read()
def peak():
    status = open("/proc/self/status").read().split("VmHWM:")[1]
    return int(status.split()[0]) // 1024
before = peak()
picture = preprocess.decode(data)
print(peak() - before, max(picture.size))
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads Linux's /proc")
@pytest.mark.parametrize(("mode", "bound"), [("P", 75), ("RGBA", 150)])
def test_decoding_a_24_megapixel_png_bomb_never_holds_a_converted_copy(tmp_path, mode, bound):
    """Decoded, a 4900x4900 picture is 24 MB as a palette and 96 MB as RGBA: expanding the
    palette to RGBA, or premultiplying the transparency to reduce it, would add 96 MB more."""
    side = 4900
    image = Image.new(mode, (side, side), 0)
    if mode == "P":
        image.putpalette([255, 255, 255, 0, 0, 0] * 128)
        image.info["transparency"] = 0
    image.paste(1 if mode == "P" else (0, 0, 0, 255), (2000, 2000, 3000, 3000))
    path = tmp_path / "bomb.png"
    image.save(path, optimize=True)
    assert path.stat().st_size < 150_000  # a bomb: far larger decoded than sent
    script = tmp_path / "peak.py"
    script.write_text(MEASURE_PEAK)
    out = subprocess.run(
        [sys.executable, str(script), str(path)], capture_output=True, text=True, check=True
    )
    growth, size = map(int, out.stdout.split())
    assert size < 2 * preprocess.DECODE_SIZE
    assert growth < bound, f"decoding grew the process by {growth} MB"


def test_orientation_is_read_alone_from_a_large_exif():
    """Orientation 6 beside a tag of 200,000 values (1.6 MB of EXIF): the picture is turned,
    the other tags are never unpacked (Pillow's exif_transpose would, for seconds)."""
    from PIL.TiffImagePlugin import IFDRational

    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x0214] = tuple(IFDRational(i + 1, 3) for i in range(200_000))
    data = encode(Image.new("RGB", (60, 40), "white"), "PNG", exif=exif)
    assert len(data) > 10**6
    assert preprocess.decode(data).size == (40, 60)


def _jpeg_with_segments(count: int) -> bytes:
    jpeg = encode(Image.new("RGB", (32, 32), "white"), "JPEG")
    return jpeg[:2] + b"\xff\xe1\x00\x02" * count + jpeg[2:]


def test_a_jpeg_of_countless_empty_segments_is_refused_before_pillow_reads_them():
    assert preprocess.decode(_jpeg_with_segments(20)).size == (32, 32)
    with pytest.raises(ImageError, match="over 200 metadata segments"):
        preprocess.decode(_jpeg_with_segments(250_000))


def test_what_is_decoded_at_full_size_has_its_own_cap():
    big = Image.new("RGB", (6000, 4500), "white")  # 27 megapixels
    with pytest.raises(ImageError, match="25 megapixels for a progressive JPEG"):
        preprocess.decode(encode(big, "JPEG", progressive=True))
    with pytest.raises(ImageError, match="8 megapixels for WebP"):
        preprocess.decode(encode(Image.new("RGB", (3000, 3000), "white"), "WEBP"))
    thin = Image.new("RGB", (60_000, 500), "white")  # 30 Mpx that libjpeg cannot shrink
    with pytest.raises(ImageError, match="for a JPEG this shape"):
        preprocess.decode(encode(thin, "JPEG"))


def test_a_file_over_20_mb_is_refused_unread():
    with pytest.raises(ImageError, match="at most 20 MB per image"):
        preprocess.decode(b"\x89PNG" + bytes(21 * 2**20))


def _on_surface(sample: np.ndarray, surface: np.ndarray, fabric) -> tuple[Image.Image, np.ndarray]:
    """The sample as an opaque item of colour ``fabric`` (RGB, 0-1) on ``surface`` (RGB
    reflectance, 0-1), 280 pixels tall, and its true mask."""
    size = 280
    coverage = np.asarray(Image.fromarray(sample).resize((size, size), Image.Resampling.BICUBIC))
    picture = np.array(surface[:400, :400], dtype=np.float32)
    truth = np.zeros(picture.shape[:2], dtype=bool)
    truth[60 : 60 + size, 60 : 60 + size] = coverage > 25
    amount = np.zeros(picture.shape[:2], dtype=np.float32)
    amount[60 : 60 + size, 60 : 60 + size] = coverage / 255
    picture = (1 - amount[..., None]) * picture + amount[..., None] * np.float32(fabric)
    return Image.fromarray(np.uint8(np.clip(picture * 255, 0, 255).round())), truth


@pytest.mark.parametrize("item", [0.15, 0.8])  # darker and lighter than the surface
def test_an_item_on_a_mid_grey_surface_keeps_its_polarity(sample, item):
    """The border's grey (0.45) is below the middle: it cannot say whether the item is the dark
    or the light part; the masked item says it."""
    surface = np.full((400, 400, 3), 0.45, dtype=np.float32)
    photo, _ = _on_surface(sample, surface, [item] * 3)
    converted = preprocess.to_fashion_mnist(photo)
    assert np.abs(converted.astype(int) - sample).mean() < 20
    assert converted.max() == 255


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def test_on_every_surface_the_item_is_found_apart_from_the_texture(sample, monkeypatch):
    """All six surfaces are seen as textured, and the texture step's mask (the network's,
    trimmed to what is unlike the border's colours and textures) follows the item on each,
    where the smooth backdrop's mask takes much of the texture along (a weave, a carpet,
    tiles' grout)."""
    from fmnist_lib import custom_images

    surfaces, seed = {}, 0
    while len(surfaces) < len(custom_images.SURFACES):
        texture, kind = custom_images._texture((400, 400), np.random.default_rng(seed))
        surfaces.setdefault(kind, texture)
        seed += 1
    found, raw = {}, {}
    for kind, texture in surfaces.items():
        photo, truth = _on_surface(sample, texture, [0.1, 0.1, 0.1])
        rgb = preprocess.light_backdrop_copy(photo).astype(np.float32)
        backdrop = preprocess.backdrop_model(rgb)
        assert preprocess.roughness(rgb, backdrop) > preprocess.TEXTURED, kind
        small = np.asarray(Image.fromarray(truth).resize(rgb.shape[1::-1])) > 0
        found[kind] = _iou(preprocess.item_mask(rgb, backdrop), small)
        with monkeypatch.context() as patch:
            patch.setattr(masking, "TEXTURED", float("inf"))  # the smooth backdrop's mask
            raw[kind] = _iou(preprocess.item_mask(rgb, backdrop), small)
    assert min(found.values()) > 0.6, found
    assert np.mean(list(found.values())) > max(0.75, np.mean(list(raw.values())) + 0.2), (
        found,
        raw,
    )


@pytest.mark.parametrize("width", [0, 20, 40])
def test_an_item_crossing_the_edge_of_a_textured_picture_stays_in_its_mask(width):
    """A strap running off the bottom edge puts some of the item in the border band: it must
    not become one of the surface's looks, which would take the item out of its own mask."""
    from scipy import ndimage

    noise = ndimage.gaussian_filter(np.random.default_rng(0).normal(0, 1, (256, 256)), 1.5)
    surface = np.clip(170 + 18 * noise / noise.std(), 0, 255)  # a fine pile, a carpet
    rgb = (np.repeat(surface[..., None], 3, axis=2) * [1, 0.95, 0.85]).astype(np.float32)
    truth = np.zeros((256, 256), dtype=bool)
    truth[60:200, 80:170] = True
    truth[190:, 120 : 120 + width] = True
    rgb[truth] = 60
    backdrop = preprocess.backdrop_model(rgb)
    assert preprocess.roughness(rgb, backdrop) > preprocess.TEXTURED
    mask = preprocess.item_mask(rgb, backdrop)
    assert (truth & ~mask).sum() < 0.02 * truth.sum()  # the strap too, down to the edge
    assert _iou(mask, truth) > 0.8  # the network's outline runs a few pixels wide
    assert preprocess.mask_doubt(mask) is None


def test_when_nothing_is_unlike_the_surface_the_smooth_mask_is_the_guess(sample, monkeypatch):
    """A garment whose colour lies within a rough surface's spread leaves the texture step
    with nothing: the smooth backdrop's mask is used rather than calling the photo blank."""
    from fmnist_lib import custom_images

    texture, _ = custom_images._texture((400, 400), np.random.default_rng(0))
    photo, truth = _on_surface(sample, texture, [0.1, 0.1, 0.1])
    rgb = preprocess.light_backdrop_copy(photo).astype(np.float32)
    backdrop = preprocess.backdrop_model(rgb)
    assert preprocess.roughness(rgb, backdrop) > preprocess.TEXTURED
    monkeypatch.setattr(masking, "SURFACE_FLOOR", float("inf"))  # nothing passes the floor,
    monkeypatch.setattr(masking, "SURFACE_CUT", float("inf"))  # nor the clusters' cut
    assert not masking._textured_mask(rgb, backdrop).any()
    mask = preprocess.item_mask(rgb, backdrop)
    small = np.asarray(Image.fromarray(truth).resize(rgb.shape[1::-1])) > 0
    assert mask.any() and (mask & small).sum() > 0.5 * small.sum()
    assert preprocess.to_fashion_mnist(photo).shape == (28, 28)


@pytest.mark.parametrize("size", [2, 4, 6, 12])
def test_a_tiny_noisy_picture_gets_an_answer_or_a_clear_refusal(size):
    """A few pixels of noise: the border band is too small for the surface's clusters; the
    conversion still ends in a 28x28 image or an `ImageError`, never another exception."""
    for seed in range(10):
        pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
        try:
            assert preprocess.prepare(encode(Image.fromarray(pixels), "PNG")).shape == (28, 28)
        except ImageError:
            pass


def test_a_smooth_backdrop_is_not_taken_for_a_texture(sample):
    photo, _ = studio_photo(sample)
    jpeg = preprocess.decode(encode(photo.convert("RGB"), "JPEG", quality=80))
    rgb = preprocess._working_copy(jpeg).astype(np.float32)
    assert preprocess.roughness(rgb, preprocess.backdrop_model(rgb)) < preprocess.TEXTURED


def _check(shape: tuple[int, int], yarns, block: int = 16) -> np.ndarray:
    """A coarse check (``block`` pixels a square) of two yarns' colours (RGB reflectance, 0-1):
    as wide as the item's own detail once reduced to 28x28, so the reduction does not blur it
    away."""
    y, x = np.mgrid[0 : shape[0], 0 : shape[1]]
    check = ((y // block + x // block) % 2).astype(bool)[..., None]
    return np.where(check, np.float32(yarns[0]), np.float32(yarns[1])).astype(np.float32)


def test_on_a_check_the_items_grey_is_its_share_not_the_yarns_seen_through_it(monkeypatch):
    """Where a blue garment's soft parts let a light and dark brown check show through, its
    brightness puts the check into the item; its share read along the colour that tells it
    from the check (`item_grey`) leaves most of the check out: the 28x28 results are closer to
    the dataset's images."""
    images = load_fashion_mnist().x_test[:3]
    surface = _check((400, 400), [(0.8, 0.7, 0.5), (0.5, 0.4, 0.3)])
    photos = [_on_surface(image, surface, [0.2, 0.3, 0.7])[0] for image in images]
    share = [preprocess.to_fashion_mnist(photo) for photo in photos]
    monkeypatch.setattr(preprocess, "item_grey", lambda rgb, backdrop, mask: None)
    brightness = [preprocess.to_fashion_mnist(photo) for photo in photos]
    error = np.abs(np.stack(share).astype(int) - images).mean()
    brightness_error = np.abs(np.stack(brightness).astype(int) - images).mean()
    assert error < 0.8 * brightness_error, (error, brightness_error)


def test_the_items_share_is_left_to_the_brightness_where_it_cannot_be_read():
    """No mask, a mask over the whole border, an item of the surface's own colour: None, and
    the conversion reads the brightness instead."""
    rng = np.random.default_rng(0)
    rgb = np.clip(150 + rng.normal(0, 20, (120, 120, 3)), 0, 255).astype(np.float32)
    backdrop = np.full_like(rgb, 150.0)
    assert masking.item_grey(rgb, backdrop, np.zeros((120, 120), bool)) is None
    assert masking.item_grey(rgb, backdrop, np.ones((120, 120), bool)) is None
    flat = np.full((120, 120, 3), 150.0, np.float32)
    centre = np.zeros((120, 120), bool)
    centre[40:80, 40:80] = True
    assert masking.item_grey(flat, backdrop, centre) is None
    grey = masking.item_grey(rgb * np.where(centre, 0.4, 1.0)[..., None], backdrop, centre)
    assert grey.dtype == np.float32 and grey.shape == (120, 120)
    assert grey[centre].mean() < 60 and np.median(grey[~centre]) > 200


@pytest.mark.parametrize(
    "yarns, fabric",
    [
        ([(0.3, 0.25, 0.2), (0.15, 0.12, 0.1)], [0.55, 0.75, 0.95]),  # a light item, dark check
        ([(0.75,) * 3, (0.45,) * 3], [0.15] * 3),  # all grey: a black-and-white photo
    ],
)
def test_a_light_or_grey_item_on_a_check_comes_back_close_to_its_image(sample, yarns, fabric):
    """The share holds where the item is lighter than its surface (negated first) and where a
    photo has no colour at all (the covariance has one direction: the share is the
    brightness's)."""
    photo, _ = _on_surface(sample, _check((400, 400), yarns), fabric)
    converted = preprocess.to_fashion_mnist(photo)
    assert converted.max() == 255
    assert np.abs(converted.astype(int) - sample).mean() < 30


def test_a_smooth_backdrop_never_reads_the_items_share(sample, monkeypatch):
    """Plain and studio photos keep the brightness over the backdrop: `item_grey` is the
    textured surface's alone."""

    def refuse(rgb, backdrop, mask):
        raise AssertionError("item_grey called on a smooth backdrop")

    monkeypatch.setattr(preprocess, "item_grey", refuse)
    photo, _ = studio_photo(sample)
    assert preprocess.to_fashion_mnist(photo).shape == (28, 28)
    plain = Image.fromarray(255 - np.kron(sample, np.ones((8, 8), np.uint8)))
    assert preprocess.to_fashion_mnist(plain).shape == (28, 28)
