"""The surface-mask network: where a garment lies on a textured surface (wood, fabric, tiles, a
carpet). A small U-Net learns it from composites of *training* images rendered over textures,
whose true masks are known (`custom_images.cluttered_photo_and_coverage`); `masking` runs its
ONNX export (``surface_mask.onnx``, beside this file) on every picture with a textured border.

    python -m fmnist_lib train-surface-mask     # about 37 minutes on two cores (AMD EPYC)

The network sees the picture reduced to `INPUT` x `INPUT` pixels, four numbers per pixel: its
colour divided by the backdrop model (the light evened out) and how far its neighbourhood is
from the border's looks (`masking.surface_distance`, which knows this picture's own surface).
It answers, for each pixel, the chance that it belongs to the item: the clusters know only what
the border looks like; the network also knows what garments look like.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import masking
from .masking import DISTANCE_RANGE, NETWORK_FILE, NETWORK_INPUT, _shrunk, network_input

FILE, INPUT = NETWORK_FILE, NETWORK_INPUT  # the names this module's readers know

RECORD = FILE.with_suffix(".json")  # how the shipped network was trained, for chapter 6
# Composites and passes over them. Seed 3: chapter 6 reports on test renderings (seed 0),
# benchmarks/masks.py chooses on validation renderings (seed 1).
COMPOSITES = 8000
EPOCHS = 14
BATCH = 32
SEED = 3
TOLERANCE = 1e-4  # the ONNX export may differ from Keras by float rounding only


def network():
    """The U-Net: three times two convolutions and a halving (96, 48, 24, 12 pixels), then back
    up, each level joined to the one of its size on the way down, so that the answer has both
    the outline's detail and the whole garment's context. About 230,000 weights."""
    import keras
    from keras import layers

    def twice(x, filters):
        x = layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        return layers.Conv2D(filters, 3, padding="same", activation="relu")(x)

    picture = keras.Input((INPUT, INPUT, 4))
    down1 = twice(picture, 16)
    down2 = twice(layers.MaxPooling2D()(down1), 32)
    down3 = twice(layers.MaxPooling2D()(down2), 48)
    bottom = twice(layers.MaxPooling2D()(down3), 64)
    up3 = twice(layers.Concatenate()([layers.UpSampling2D()(bottom), down3]), 48)
    up2 = twice(layers.Concatenate()([layers.UpSampling2D()(up3), down2]), 32)
    up1 = twice(layers.Concatenate()([layers.UpSampling2D()(up2), down1]), 16)
    chance = layers.Conv2D(1, 1, activation="sigmoid")(up1)
    return keras.Model(picture, chance, name="surface_mask")


def _composite(args: tuple[np.ndarray, list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """One training example: an image rendered on a surface, saved as a JPEG and converted up
    to the mask step, as `preprocess.fashion_mnist_steps` does; and its true mask."""
    from . import custom_images, preprocess

    image, seed = args
    rng = np.random.default_rng(seed)
    photo, coverage = custom_images.cluttered_photo_and_coverage(image, rng)
    jpeg = custom_images.encode(photo, "JPEG", int(rng.integers(70, 96)))
    rgb = preprocess.light_backdrop_copy(preprocess.decode(jpeg))
    backdrop = masking.backdrop_model(rgb)
    x = network_input(rgb, backdrop, masking.surface_distance(rgb, backdrop))
    y = _shrunk(coverage) > 0.2  # the faintest edge of the fabric is not the item
    if rng.random() < 0.5:  # half of them mirrored: garments face either way
        x, y = x[:, ::-1], y[:, ::-1]
    return x.astype(np.float16), y


def composites(images: np.ndarray, seed: int = SEED, workers: int = 2):
    """Inputs and true masks (``(n, INPUT, INPUT, 4)`` float16, ``(n, INPUT, INPUT)`` bool) for
    28x28 ``images``, one cluttered rendering each."""
    from concurrent.futures import ProcessPoolExecutor

    jobs = [(image, [seed, index]) for index, image in enumerate(images)]
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            examples = list(pool.map(_composite, jobs, chunksize=20))
    else:
        examples = [_composite(job) for job in jobs]
    return np.stack([e[0] for e in examples]), np.stack([e[1] for e in examples])


def inputs() -> dict[str, float]:
    """The settings the network's input depends on: a network trained under other ones sees
    other numbers, and must be retrained (a test compares them with the shipped record)."""
    from . import decoding

    return {
        "INPUT": INPUT,
        "DISTANCE_RANGE": DISTANCE_RANGE,
        "WORK_SIZE": decoding.WORK_SIZE,
        "BORDER_BAND": masking.BORDER_BAND,
        "TEXTURE_SIGMA": masking.TEXTURE_SIGMA,
        "SURFACE_CLUSTERS": masking.SURFACE_CLUSTERS,
        "SURFACE_LOOK": masking.SURFACE_LOOK,
    }


def train(count: int = COMPOSITES, epochs: int = EPOCHS, path: Path = FILE, seed: int = SEED):
    """Render ``count`` training images as composites, train `network` on nine tenths, export
    it to ``path`` (ONNX) and return how, as a dict also written beside ``path`` as JSON: on
    the tenth held out, the share of pixels right and the intersection over union of the
    item's pixels; the minutes spent rendering and in all; the machine; `inputs`."""
    import json
    import time

    from .clock import machine
    from .data import load_fashion_mnist

    path = Path(path)
    if count < 10:
        raise ValueError("The network needs at least 10 composites (one held out to check).")
    if epochs < 1:
        raise ValueError("The network needs at least one epoch.")
    if path.suffix != ".onnx" or not path.parent.is_dir():
        raise ValueError(f"{path}: give an .onnx file in an existing folder.")
    began = time.perf_counter()
    images = load_fashion_mnist().x_train
    if count > len(images):
        raise ValueError(
            f"There are {len(images):,} training images: at most that many composites."
        )
    picks = np.random.default_rng(seed).choice(len(images), count, replace=False)
    x, y = composites(images[picks], seed)  # before TensorFlow starts threads: workers fork
    rendered = time.perf_counter()

    import keras

    keras.utils.set_random_seed(seed)
    model = network()
    kept = int(0.9 * count)
    # The step shrinks to nothing along a cosine over the whole run: large steps early, fine
    # ones to settle at the end, whatever the number of epochs.
    steps = epochs * -(-kept // BATCH)
    rate = keras.optimizers.schedules.CosineDecay(2e-3, decay_steps=steps)
    model.compile(optimizer=keras.optimizers.Adam(rate), loss="binary_crossentropy")
    model.fit(x[:kept], y[:kept, ..., None], batch_size=BATCH, epochs=epochs, verbose=2)
    found = model.predict(x[kept:], verbose=0)[..., 0] > 0.5
    truth = y[kept:]
    export(model, path, x[kept : kept + 8].astype(np.float32))
    record = {
        "composites": count,
        "epochs": epochs,
        "pixels right": float((found == truth).mean()),
        "item IoU": float((found & truth).sum() / max((found | truth).sum(), 1)),
        "rendering minutes": (rendered - began) / 60,
        "minutes": (time.perf_counter() - began) / 60,
        "machine": machine(),
        "inputs": inputs(),
    }
    written = path.with_suffix(".json")
    draft = written.with_name(written.name + ".part")  # a reader never sees half a record
    draft.write_text(json.dumps(record, indent=1) + "\n")
    draft.replace(written)
    return record


def export(model, path: Path, check: np.ndarray) -> None:
    """``model`` as ONNX at ``path``, written only if onnxruntime agrees with Keras on ``check``
    (within `TOLERANCE`); else `RuntimeError`, and the old file stays as it was."""
    from . import _compat
    from .model_files import onnx_session

    expected = model(check, training=False).numpy()
    draft = path.with_name(path.name + ".part")  # same folder: the rename below is atomic
    try:
        with _compat.quiet_onnx_export():
            model.export(str(draft), format="onnx", verbose=False)
        session = onnx_session(draft)
        got = session.run(None, {session.get_inputs()[0].name: check})[0]
        if float(np.abs(got - expected).max()) > TOLERANCE:
            raise RuntimeError("The ONNX export differs from Keras: not written.")
        draft.replace(path)
    finally:
        draft.unlink(missing_ok=True)
