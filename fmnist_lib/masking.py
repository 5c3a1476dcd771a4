"""Where the item is in a picture: the backdrop behind it, modelled from the picture's border,
and the mask of what differs from it (`item_mask`), on a smooth backdrop or a textured surface;
the item's grey levels on a textured surface (`item_grey`); and whether a mask looks like one
item (`mask_doubt`). `preprocess.fashion_mnist_steps` calls these; chapter 6 explains them."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
from PIL import Image

# How far from the background colour a pixel must be to belong to the object: 5% of the
# intensity range, the tolerance Fashion-MNIST's authors trimmed Zalando's photos with.
TRIM_TOLERANCE = 0.05 * 255
# The backdrop is modelled from a band around the picture this share of its shorter side wide.
BORDER_BAND = 0.03
# A pixel belongs to the item when it differs from the modelled backdrop by more than Otsu's
# threshold, and by more than this share of the item's typical difference: a soft shadow, a
# fraction of the light taken from the backdrop, stays below it, while the fabric does not.
SHADOW_SHARE = 0.45
# Pieces of the mask smaller than this share of the largest are specks, not parts of the item.
PIECE_SHARE = 0.02
# How deep (a share of the picture's longest edge) the item is grown into its soft edge.
EDGE_DEPTH = 0.04
# An item whose colour channels differ by more than this (in reflectance, 0-1) is coloured.
COLOURED = 0.1
# Below this (in reflectance, 0-1) a difference is JPEG noise or backdrop texture.
NOISE_LEVEL = 0.06
# A surface is textured (wood, fabric, tiles, a carpet) when its border band differs from the
# smooth backdrop model by more than this (median relative difference): a seamless backdrop
# stays under 0.008 with its JPEG and sensor noise; textured renderings measure 0.005 to 0.15
# (median 0.05), and the few faint ones under it are smooth enough for the smooth mask.
TEXTURED = 0.01
# On a textured surface each pixel is described by its neighbourhood (Gaussian, this many pixels
# of the working copy): its mean colour and how much its brightness varies. The border band's
# descriptions are grouped into this many clusters (the surface's looks: plank and joint, tile
# and grout, print and ground); a pixel's distance from the surface is how many of the nearest
# cluster's spreads it lies from it. Chosen on validation renderings when the clusters alone
# made the mask; the surface-mask network's input depends on them (`surface_mask.inputs`):
# changing one means retraining it.
TEXTURE_SIGMA = 4.0
SURFACE_CLUSTERS = 4
# A pixel is the item when the surface-mask network (`surface_mask`) gives it at least this
# chance, and it lies beyond this many spreads from the surface's nearest look: the network
# knows garments' shapes, the distance this picture's own surface (it trims the network's
# coarse edge). Chosen on validation renderings (benchmarks/masks.py).
ITEM_CHANCE = 0.5
SURFACE_FLOOR = 1.0
# The clusters' own mask: pixels beyond this many spreads (and Otsu's threshold on the
# distances). It vouches for the network's pieces, and is the mask where there are none.
SURFACE_CUT = 1.5
# The network (ONNX, beside this file; `surface_mask` trains it) sees the picture reduced to this
# many pixels a side: a garment's outline survives, and a picture takes a few ms. Distances
# beyond the range are all "far from the surface" to it.
NETWORK_FILE = Path(__file__).with_name("surface_mask.onnx")
NETWORK_INPUT = 96
DISTANCE_RANGE = 8.0
# On a textured surface an item's grey level is its share of each pixel, read along the colour
# that best tells the item from the surface's own variation: the item's colour is the median of
# the mask's darker half (this percentile of its brightness), the surface's variation is the
# covariance of the border band's colours (plus this ridge, in reflectance squared, so that a
# flat surface's is never singular), and the share that reads as the darkest item is this
# percentile of the mask's. Chosen on validation renderings (benchmarks/masks.py).
ITEM_CORE = 50
COLOUR_RIDGE = 1e-3
SHARE_TOP = 99
# An item less than this far from the surface along any direction (in spreads, squared) has
# no direction of its own: its brightness is read, as on a smooth backdrop.
ITEM_CONTRAST = 1.0
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
# A cluster holding less than this share of the band's pixels is not one of the surface's looks.
SURFACE_LOOK = 0.05
# A mask is doubtful, and the answer then "not sure", when it touches more than this share of
# the picture's edge, covers more than this share of the picture, or has a second piece at least
# this share of the largest: the surface, not the item, was probably taken along.
DOUBT_EDGE = 0.5
DOUBT_COVER = 0.8
DOUBT_PIECES = 0.25


def _border(grey: np.ndarray) -> np.ndarray:
    return np.concatenate([grey[0], grey[-1], grey[1:-1, 0], grey[1:-1, -1]])


def _band_width(height: int, width: int) -> int:
    return max(1, min(round(BORDER_BAND * min(height, width)), min(height, width) // 4))


def _band(shape: tuple[int, ...]) -> np.ndarray:
    """The border band (`BORDER_BAND` of the shorter side wide) as a boolean image."""
    height, width = shape[:2]
    band = _band_width(height, width)
    border = np.zeros((height, width), dtype=bool)
    border[:band], border[-band:], border[:, :band], border[:, -band:] = True, True, True, True
    return border


def _coordinates(rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]):
    """Pixel coordinates scaled to -1..1 across the picture."""
    return cols / max(shape[1] - 1, 1) * 2 - 1, rows / max(shape[0] - 1, 1) * 2 - 1


def backdrop_model(rgb: np.ndarray) -> np.ndarray:
    """The backdrop behind the item, per pixel and colour channel (float32, 1-255): a quadratic
    surface in x and y fitted to a band around the picture's border, which follows a gradient,
    a vignette and a tint. Border pixels far from the first fit (the item touching an edge)
    are left out of a second one."""
    height, width = rgb.shape[:2]
    rows, cols = np.nonzero(_band(rgb.shape))
    step = max(1, len(rows) // 4000)  # a few thousand samples fix six coefficients
    rows, cols = rows[::step], cols[::step]
    u, v = _coordinates(rows, cols, (height, width))
    terms = np.stack([np.ones_like(u), u, v, u * u, u * v, v * v], axis=1)
    values = rgb[rows, cols].astype(np.float64)
    # First the border pixels near its median colour (the backdrop, where an item touches the
    # edge), then those near the first fit (all of a gradient's range).
    residual = np.abs(values - np.median(values, axis=0)).max(axis=1)
    keep = residual <= max(float(np.median(residual)), 25.0)
    for _ in range(2):
        # Least squares by its normal equations: six unknowns, no need for an SVD.
        kept = terms[keep]
        coefficients = np.linalg.solve(kept.T @ kept + 1e-9 * np.eye(6), kept.T @ values[keep])
        residual = np.abs(values - terms @ coefficients).max(axis=1)
        keep = residual <= max(3 * float(np.median(residual[keep])), 6.0)
    u, v = _coordinates(np.arange(height)[:, None], np.arange(width)[None, :], (height, width))
    u, v = u.astype(np.float32), v.astype(np.float32)
    c = coefficients.astype(np.float32)
    model = np.empty((height, width, 3), dtype=np.float32)
    for k in range(3):
        model[..., k] = (c[0, k] + c[1, k] * u + c[3, k] * u * u) + v * (
            c[2, k] + c[4, k] * u + c[5, k] * v
        )
    return np.clip(model, 1.0, 255.0)


def roughness(rgb: np.ndarray, backdrop: np.ndarray) -> float:
    """How textured the surface is: the median relative difference, largest over the colour
    channels, between the border band and the smooth backdrop model."""
    height, width = rgb.shape[:2]
    band = _band_width(height, width)
    difference = np.abs(rgb / backdrop - 1).max(axis=2)
    border = [
        difference[:band],
        difference[-band:],
        difference[:, :band].T,
        difference[:, -band:].T,
    ]
    return float(np.median(np.concatenate([b.ravel() for b in border])))


def surface_distance(rgb: np.ndarray, backdrop: np.ndarray) -> np.ndarray:
    """How unlike the surface each pixel's neighbourhood is (float32, in spreads): the mean
    colour and the brightness variation around each pixel (Gaussian weights, standard deviation
    `TEXTURE_SIGMA`), light evened out by the backdrop model, compared with the nearest of
    `SURFACE_CLUSTERS` groups of the border band's. Each of the four numbers is first divided
    by its spread over the band; a group's spread is its members' root-mean-square distance
    from its centre. A weave and a wood grain vary a lot around every pixel, as their border
    does; a garment varies less and has its own colour."""
    import warnings

    from scipy import ndimage
    from scipy.cluster.vq import kmeans2

    ratio = (rgb / backdrop).astype(np.float32)
    brightness = ratio @ LUMA
    mean = ndimage.gaussian_filter(ratio, (TEXTURE_SIGMA, TEXTURE_SIGMA, 0))
    around = ndimage.gaussian_filter(brightness, TEXTURE_SIGMA)
    square = ndimage.gaussian_filter(brightness * brightness, TEXTURE_SIGMA)
    variation = np.sqrt(np.maximum(square - around * around, 0))
    features = np.concatenate([mean, variation[..., None]], axis=2)
    samples = features[_band(features.shape)]
    samples = samples[:: max(1, len(samples) // 3000)]
    scale = samples.std(axis=0) + 0.02  # each feature in units of the border's own spread
    samples, features = samples / scale, features / scale
    with warnings.catch_warnings():  # a surface of one look leaves clusters empty
        warnings.simplefilter("ignore", UserWarning)
        centres, labels = kmeans2(samples, SURFACE_CLUSTERS, minit="++", rng=0)
    # A look of the surface fills some of the band; a few stray pixels, or an item crossing
    # the edge, do not make one.
    looks = [
        (centre, samples[labels == k])
        for k, centre in enumerate(centres)
        if (labels == k).mean() >= SURFACE_LOOK
    ] or [(samples.mean(axis=0), samples)]
    distance = np.full(features.shape[:2], np.inf, dtype=np.float32)
    for centre, members in looks:
        # Half a unit more: a look of one flat colour would otherwise have no spread at all.
        spread = np.sqrt(((members - centre) ** 2).sum(axis=1).mean()) + 0.5
        distance = np.minimum(distance, np.linalg.norm(features - centre, axis=2) / spread)
    return distance


def _shrunk(values: np.ndarray) -> np.ndarray:
    image = Image.fromarray(values.astype(np.float32), mode="F")
    return np.asarray(image.resize((NETWORK_INPUT, NETWORK_INPUT), Image.Resampling.BILINEAR))


def network_input(rgb: np.ndarray, backdrop: np.ndarray, distance: np.ndarray) -> np.ndarray:
    """What the surface-mask network sees of a picture (float32, `NETWORK_INPUT` a side, four
    numbers per pixel): the colour over the backdrop model (0-2), and the surface distance
    (`surface_distance`) as a share of `DISTANCE_RANGE`."""
    ratio = np.clip(rgb / backdrop, 0, 2)
    far = np.minimum(distance, DISTANCE_RANGE) / DISTANCE_RANGE
    return np.stack([_shrunk(ratio[..., c]) for c in range(3)] + [_shrunk(far)], axis=-1)


_session = None
_session_lock = threading.Lock()


def _network():
    global _session
    with _session_lock:  # one session per process, however many threads convert pictures
        if _session is None:
            from .model_files import onnx_session

            _session = onnx_session(NETWORK_FILE)
        return _session


def network_chance(rgb: np.ndarray, backdrop: np.ndarray, distance: np.ndarray) -> np.ndarray:
    """For each pixel of the picture, the surface-mask network's chance (0-1, float32) that it
    belongs to the item."""
    session = _network()
    x = network_input(rgb, backdrop, distance)[None]
    small = session.run(None, {session.get_inputs()[0].name: x})[0][0, ..., 0]
    height, width = rgb.shape[:2]
    image = Image.fromarray(small.astype(np.float32), mode="F")
    return np.asarray(image.resize((width, height), Image.Resampling.BILINEAR))


def _textured_mask(rgb: np.ndarray, backdrop: np.ndarray) -> np.ndarray:
    from scipy import ndimage
    from skimage.filters import threshold_otsu

    raw = surface_distance(rgb, backdrop)
    distance = ndimage.uniform_filter(raw, 3)
    threshold = max(float(threshold_otsu(distance)), SURFACE_CUT)
    clusters = ndimage.binary_opening(distance > threshold, iterations=1)
    if not clusters.any():
        return clusters  # nothing to vouch for any piece of the network's
    network = (network_chance(rgb, backdrop, raw) >= ITEM_CHANCE) & (distance > SURFACE_FLOOR)
    # A piece of the network's mask that the clusters see nothing of is its guess on a surface
    # unlike those it learnt on (a hard-edged print): dropped. With none left, the clusters'.
    labels, _ = ndimage.label(network)
    vouched = np.unique(labels[clusters & (labels > 0)])
    mask = np.isin(labels, vouched[vouched > 0])
    return mask if mask.any() else clusters


def textured(rgb: np.ndarray, backdrop: np.ndarray) -> bool:
    """Whether the picture's surface is textured: its `roughness` above `TEXTURED`."""
    return roughness(rgb, backdrop) > TEXTURED


def item_grey(rgb: np.ndarray, backdrop: np.ndarray, mask: np.ndarray) -> np.ndarray | None:
    """On a textured surface, the item as grey levels (float32, 0-255, dark item on light):
    each pixel's share of the item, read along the colour that separates the item from the
    surface's own variation (Fisher's discriminant direction: the item's colour over the
    backdrop, `ITEM_CORE`, weighed by the inverse covariance of the border band's colours,
    `COLOUR_RIDGE`), scaled so that `SHARE_TOP` of the mask's shares reads as fully dark.

    Brightness alone, the dataset's recipe, counts a wood grain or a two-yarn weave seen
    through the item's soft parts as the item's own shading; along this direction the
    surface's variation weighs least. None where it cannot be read (no mask, no border band
    outside it, an item within `ITEM_CONTRAST` of the surface's colours): the brightness is
    used instead."""
    if not mask.any():
        return None
    ratio = (rgb / backdrop).astype(np.float32)
    band = _band(mask.shape) & ~mask
    if band.sum() < 10:
        return None
    spread = np.cov(ratio[band].astype(np.float64).T) + COLOUR_RIDGE * np.eye(3)
    brightness = ratio @ LUMA
    core = mask & (brightness <= np.percentile(brightness[mask], ITEM_CORE))
    item = np.median(ratio[core], axis=0).astype(np.float64) - 1
    weights = np.linalg.solve(spread, item)
    contrast = float(weights @ item)
    if contrast < ITEM_CONTRAST:
        return None  # within the surface's spread: no colour tells the item apart
    share = ((ratio - 1) @ weights.astype(np.float32)) / np.float32(contrast)
    top = max(float(np.percentile(share[mask], SHARE_TOP)), 1e-3)
    return np.float32(255) * (1 - np.clip(share / np.float32(top), 0, 1))


def item_mask(rgb: np.ndarray, backdrop: np.ndarray, rough: bool | None = None) -> np.ndarray:
    """Where the item is: pixels whose colour differs from the modelled backdrop (relative
    difference, largest over the three channels, so that a yellow shirt on white counts) by
    more than Otsu's threshold and than `SHADOW_SHARE` of the item's typical difference;
    specks removed, grown `EDGE_DEPTH` into its soft edge, pieces much smaller than the largest
    dropped, holes filled. On a textured surface (`roughness` above `TEXTURED`), the pixels the
    surface-mask network calls the item (`ITEM_CHANCE`) that are also unlike the border's
    colours and textures (`surface_distance` above `SURFACE_FLOOR`), in pieces that touch the
    clusters' own mask (beyond `SURFACE_CUT`; that mask alone if no piece does), small pieces
    dropped and holes filled, but no growth; if there are none, the smooth backdrop's mask.
    ``rough``: `textured`, when the caller has it already."""
    from scipy import ndimage

    if rough is None:
        rough = textured(rgb, backdrop)
    mask = _textured_mask(rgb, backdrop) if rough else None
    if mask is None or not mask.any():
        # The clusters find nothing unlike the surface's looks (a dark shirt on a dark, rough
        # carpet, its colour within the carpet's spread): what differs from the smooth
        # backdrop is the best guess.
        mask = _smooth_mask(rgb, backdrop)
    labels, count = ndimage.label(mask)
    if count > 1:
        areas = np.bincount(labels.ravel())[1:]
        mask = np.isin(labels, 1 + np.flatnonzero(areas >= PIECE_SHARE * areas.max()))
    return ndimage.binary_fill_holes(mask)


def _smooth_mask(rgb: np.ndarray, backdrop: np.ndarray) -> np.ndarray:
    from scipy import ndimage
    from skimage.filters import threshold_otsu

    ratio = rgb / backdrop  # float32, as the backdrop
    difference = np.abs(1 - ratio).max(axis=2)
    distance = ndimage.uniform_filter(difference, 3)  # JPEG blocks and sensor noise
    threshold = max(float(threshold_otsu(distance)), NOISE_LEVEL)
    above = distance[distance > threshold]
    if above.size:
        threshold = max(threshold, SHADOW_SHARE * float(np.percentile(above, 75)))
    mask = ndimage.binary_opening(distance > threshold, iterations=1)
    # The fabric's soft edge is below the threshold: grow the item into pixels that differ from
    # the backdrop at all (by more than the dataset's 5%), a few pixels deep only. This joins a
    # faint strap to its bag. A shadow only darkens the backdrop, keeping its hue: around a
    # coloured item, the growth keeps to pixels with some of the item's colour, and leaves the
    # shadow out; around a grey one, it cannot tell them apart.
    edge = difference > TRIM_TOLERANCE / 255
    hue = ndimage.uniform_filter(ratio.max(axis=2) - ratio.min(axis=2), 3)
    item_hue = float(np.median(hue[mask])) if mask.any() else 0.0
    if item_hue > COLOURED:
        edge &= hue > item_hue / 4
    depth = max(1, round(EDGE_DEPTH * max(mask.shape)))
    return ndimage.binary_dilation(mask, iterations=depth, mask=edge)


def lighter_than_backdrop(rgb: np.ndarray, backdrop: np.ndarray, mask: np.ndarray) -> bool:
    """Whether most of the item is lighter than the backdrop behind it (in luminance)."""
    if not mask.any():
        return False
    ratio = (rgb[mask] @ LUMA) / (backdrop[mask] @ LUMA)
    return float(np.median(ratio)) > 1.0


def mask_doubt(mask: np.ndarray) -> str | None:
    """Why a mask (`item_mask`, or the ``mask`` step) is probably not the item alone, as the
    end of a sentence ("the mask touches 64% of the picture's edge"), or None if it looks like
    one item. See `DOUBT_EDGE`, `DOUBT_COVER`, `DOUBT_PIECES`."""
    from scipy import ndimage

    mask = np.asarray(mask) > 0
    edge = float(_border(mask).mean())
    if edge > DOUBT_EDGE:
        return f"the mask touches {edge:.0%} of the picture's edge"
    cover = float(mask.mean())
    if cover > DOUBT_COVER:
        return f"the mask covers {cover:.0%} of the picture"
    labels, count = ndimage.label(mask)
    if count > 1:
        areas = np.sort(np.bincount(labels.ravel())[1:])[::-1]
        pieces = int((areas >= DOUBT_PIECES * areas[0]).sum())
        if pieces > 1:
            return f"the mask is in {pieces} pieces"
    return None
