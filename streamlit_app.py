"""The course's app: classify your own pictures of clothes, test images and generated images with
the registered models, see what each model saw and looked at, and compare two models.

    streamlit run streamlit_app.py        (or ./course app)

The app only lays things out: images are read and converted by `fmnist_lib.predictions` (the
same preprocessing as the served model), models come from the MLflow registry through
`fmnist_lib.serving`, saliency maps from `fmnist_lib.explain`.
"""

from __future__ import annotations

import dataclasses
import hashlib
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import streamlit as st
from streamlit_drawable_canvas import st_canvas

# Light imports only: MLflow and TensorFlow load in the background (see `start_loading`) while
# the page is drawn, so that the uploader shows within a second or two of opening the app.
from fmnist_lib import explain, plots, predictions, processes, registry, tracking
from fmnist_lib.acquisition import DatasetError, load_test_set
from fmnist_lib.config import generated_dir
from fmnist_lib.data import CLASS_NAMES

DETAILS = 12  # images shown in full; the table lists them all
MAX_FILES = 20  # uploads classified per run: more would make a slow page
UPLOAD_TYPES = ["png", "jpg", "jpeg", "webp", "gif", "bmp"]
DRAWING_SIZE = 280  # pixels of the drawing canvas, ten times the model's 28

st.set_page_config(page_title="Fashion-MNIST classifier", page_icon="👕", layout="wide")


@st.cache_resource
def _loader() -> ThreadPoolExecutor:
    processes.give_back_freed_memory()  # once per process: uploads of 20 MB come and go
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="model-loader")


def _import_frameworks() -> None:
    # MLflow's store lists the models (2 s of imports); onnxruntime runs the networks. Not
    # TensorFlow: 3 s and 450 MB, loaded only when a saliency map is asked for (`explainer`).
    import mlflow.store.tracking.sqlalchemy_store  # noqa: F401
    import onnxruntime  # noqa: F401

    from fmnist_lib import serving  # noqa: F401


@st.cache_resource(show_spinner=False)
def warm_up() -> Future:
    """Start importing MLflow and onnxruntime while the first page is drawn."""
    return _loader().submit(_import_frameworks)


def _load(uri: str):
    from fmnist_lib import artifact

    classifier = artifact.load(uri)
    classifier.predict_proba(np.zeros((1, 28, 28), dtype=np.uint8))  # its first run, here
    return classifier


def _prepare_maps(classifier) -> str | None:
    # The Keras network behind the ONNX file, and TensorFlow with it; the maps' compiled
    # function traced now rather than on the first image.
    name = explain.method(classifier)
    if name:
        explain.saliency(classifier, np.zeros((1, 28, 28), dtype=np.uint8), [0])
    return name


@st.cache_resource(show_spinner=False)
def start_loading(uri: str) -> Future:
    """Load a model once per process, in the background: call early, `load_model` waits."""
    return _loader().submit(_load, uri)


def load_model(uri: str):
    try:
        with st.spinner("Loading the model…"):
            return start_loading(uri).result()
    except Exception as err:  # a broken artifact: say so, and try again on the next run
        start_loading.clear()
        st.error(f"The model {uri} could not be loaded: {err}")
        st.stop()


@st.cache_resource(show_spinner=False)
def start_explaining(uri: str, _classifier) -> Future:
    """Make ready a model's saliency maps once per process, in the background (the app starts
    without TensorFlow); the future's result is the method's name, or None."""
    return _loader().submit(_prepare_maps, _classifier)


def maps_method(uri: str, classifier) -> str | None:
    try:
        with st.spinner("Loading TensorFlow for the maps (a few seconds, once)…"):
            return start_explaining(uri, classifier).result()
    except Exception as err:
        start_explaining.clear()
        st.error(f"The maps of {uri} could not be prepared: {err}")
        return None


@st.cache_data(ttl=30, show_spinner=False)
def available_models(store: str) -> list[registry.Registered]:  # keyed on the store
    return registry.registered_models()


@st.cache_data(show_spinner="Reading the test set…")
def test_gallery() -> list[predictions.Item]:
    return predictions.test_gallery(*load_test_set(download=False))


# Keyed by the input's hash, holding what is shown (thumbnails and the 28x28 image), not the
# upload: 100 entries of under 1 MB each, for an hour at most, whatever the uploads weigh.
@st.cache_data(max_entries=100, ttl=3600, show_spinner=False)
def _examined(key: str, _item: predictions.Item) -> predictions.Examined:
    examined = predictions.examine(_item)
    return dataclasses.replace(examined, item=dataclasses.replace(_item, data=None))


def examine(item: predictions.Item) -> predictions.Examined:
    data = item.data if item.data is not None else b""
    if isinstance(data, np.ndarray):
        data = np.ascontiguousarray(data)
    digest = hashlib.sha256(data).hexdigest()
    return _examined(f"{item.source}/{item.name}/{item.label}/{digest}", item)


def pick_one_of_each(gallery: list[predictions.Item]) -> None:
    firsts = {}
    for item in gallery:
        firsts.setdefault(item.label, item.name)
    st.session_state["test_picks"] = list(firsts.values())


def inputs() -> list[predictions.Item]:
    """The images chosen in the four tabs, in order: uploads, the drawing, test images,
    generated ones."""
    upload_tab, draw_tab, test_tab, generated_tab = st.tabs(
        ["Upload", "Draw", "Test images", "Generated images"]
    )
    with upload_tab:
        files = st.file_uploader(
            "Pictures of clothes: PNG, JPEG, WebP, GIF or BMP, one item per picture",
            type=UPLOAD_TYPES,
            accept_multiple_files=True,
            key="uploads",
        )
    files = files or []
    if len(files) > MAX_FILES:
        upload_tab.warning(
            f"{len(files)} pictures uploaded: the app classifies {MAX_FILES} at a time, here "
            f"the first {MAX_FILES}. Remove some (×) to see the others.",
            icon="✋",
        )
        files = files[:MAX_FILES]
    # The upload's own buffer, not a copy: the app then holds each photo once.
    items = [predictions.Item(f.name, f.getbuffer()) for f in files]
    with draw_tab:
        st.caption(
            "Draw one garment, dark on white and as large as the box: the drawing goes through "
            "the same conversion as a photo. Drawings are unlike the dataset's photos, so expect "
            "mistakes (chapter 6 measures how many)."
        )
        pen = st.slider("Pen width", 2, 30, 8, key="pen")
        canvas = st_canvas(
            stroke_width=pen,
            stroke_color="#000000",
            background_color="#ffffff",
            height=DRAWING_SIZE,
            width=DRAWING_SIZE,
            drawing_mode="freedraw",
            return_image_data=True,
            key="drawing",
        )
        pixels = canvas.image_data
        drawing = predictions.drawing_item(pixels) if pixels is not None else None
        if drawing is not None:
            items.append(drawing)
    with test_tab:
        try:
            gallery = test_gallery()
        except DatasetError as err:
            st.info(f"The test set is not available: {err}")
            gallery = []
        if gallery:
            by_name = {item.name: item for item in gallery}
            picks = st.multiselect(
                "Fashion-MNIST test images (their true class is known)",
                list(by_name),
                format_func=lambda name: f"{name} · {CLASS_NAMES[by_name[name].label]}",
                key="test_picks",
            )
            st.button("One of each class", on_click=pick_one_of_each, args=(gallery,))
            items += [by_name[name] for name in picks]
    with generated_tab:
        folder = generated_dir()
        generated = {image.file: image for image in predictions.generated_gallery(folder)}
        if not generated:
            st.info("No generated images yet: run `python create_img.py` to make them.")
        else:
            picks = st.multiselect(
                "Drawn garments and product photos from create_img.py",
                list(generated),
                format_func=lambda f: f"{f} · {generated[f].class_name}",
                key="generated_picks",
            )
            items += [predictions.generated_item(folder, generated[f]) for f in picks]
    return items


def show_prediction(model: registry.Registered, classifier, examined, proba, heat) -> None:
    best = int(proba.argmax())
    label = examined.item.label
    confidence = float(classifier.calibration.confidence(proba[None])[0])
    answer = f"{CLASS_NAMES[best]} ({confidence:.0%})"
    if label is not None:
        answer += " ✓ right" if label == best else f", but the true class is {CLASS_NAMES[label]}"
    if examined.doubt:
        # The picture may not be the item alone: whatever the model says, say why.
        st.warning(f"{model.short}: not sure, {examined.doubt}. Perhaps {answer}", icon="❓")
    elif confidence < classifier.calibration.threshold:
        # Below the threshold chosen on the validation set: as likely wrong as right.
        st.warning(f"{model.short}: not sure. Perhaps {answer}", icon="❓")
    elif label is not None and label != best:
        st.warning(f"{model.short}: {answer}")
    else:
        st.success(f"{model.short}: {answer}")
    # The top 3 as bars. Not st.bar_chart: its first chart costs 2 s (Altair) on 2 cores.
    score = "" if classifier.has_probabilities else " of the SVM's votes"
    top = predictions.top_classes(proba)
    for name, p in zip(top["class"], top["probability"], strict=True):
        st.progress(float(p), text=f"{name}: {p:.1%}{score}")
    if heat is not None:
        st.image(
            plots.heat_overlay(examined.image, heat, scale=6),
            caption=f"{explain.method(classifier)}: where it saw “{CLASS_NAMES[best]}”",
        )


def show_details(examined, models, classifiers, probas, heats, show_steps: bool) -> None:
    item = examined.item
    with st.container(border=True):
        truth = f" · true class: {CLASS_NAMES[item.label]}" if item.label is not None else ""
        st.markdown(f"**{item.name}** ({item.source}){truth}")
        columns = st.columns([1, 1] + [2] * len(models))
        columns[0].image(examined.preview, caption="The input", width=160)
        columns[1].image(plots.enlarge(examined.image, 6), caption="What the model sees")
        for column, model, classifier, proba, heat in zip(
            columns[2:], models, classifiers, probas, heats, strict=True
        ):
            with column:
                show_prediction(model, classifier, examined, proba, heat)
        if examined.doubt and not show_steps:  # the step that makes the answer doubtful
            st.image(
                examined.steps["mask"],
                caption=f"Why not sure: {examined.doubt} (chapter 6)",
                width=160,
            )
        if show_steps:
            steps = examined.steps
            # 28x28 steps blown up with sharp pixels; larger ones are shown as they are.
            pictures = [s if min(s.shape[:2]) > 28 else plots.enlarge(s, 4) for s in steps.values()]
            st.image(pictures, caption=list(steps), width=112)


def main() -> None:
    st.title("Fashion-MNIST classifier")
    st.caption(
        "Upload pictures of clothes, draw one, or pick test images: each model of the course "
        "says which of the ten classes it sees, how sure it is, and where it looked."
    )
    warm_up()
    notice = st.container()
    items = inputs()
    try:
        available = available_models(tracking.tracking_uri())
    except Exception as err:  # an unreachable tracking server must not show a traceback
        notice.error(f"The MLflow store {tracking.shown_uri()} cannot be read: {err}")
        return
    if not available:
        notice.warning(registry.no_model_message())
        return
    start_loading(available[0].uri)  # the default model loads while the rest is drawn

    labels = {model.label: model for model in available}
    with st.sidebar:
        st.header("Models")
        chosen = labels[st.selectbox("Model", list(labels), key="model")]
        other = st.selectbox(
            "Compare with", ["nothing"] + [k for k in labels if k != chosen.label], key="compare"
        )
        models = [chosen] + ([labels[other]] if other in labels else [])
        show_steps = st.toggle("Show the preprocessing steps", key="steps")
        show_maps = st.toggle(
            "Show where the network looked",
            key="maps",
            help="Saliency maps need TensorFlow: the first time, it loads in a few seconds.",
        )
        st.caption(
            "How a photo becomes the 28x28 image the model sees (the backdrop, the mask, the "
            "dataset's own steps), and when the app says *not sure*: chapter 6 of the course, "
            "*Custom images, and why they fail* (`book/06_custom.md`; `./course book` builds it "
            "into `_build/html/06_custom.html`)."
        )
    for model in models:
        start_loading(model.uri)

    if not items:
        st.info("Upload pictures, draw a garment or pick images in the tabs above.")
        return
    examined = [examine(item) for item in items]
    for e in examined:
        if not e.ok:
            st.error(f"{e.item.name}: {e.error}")

    classifiers = [load_model(model.uri) for model in models]
    outputs = {
        model.short: predictions.predict(classifier, examined)
        for model, classifier in zip(models, classifiers, strict=True)
    }
    shown = [k for k, e in enumerate(examined) if e.ok][:DETAILS]
    heats = []  # per model, per shown image: a saliency map or None
    for model, classifier, probas in zip(models, classifiers, outputs.values(), strict=True):
        if show_maps and shown and maps_method(model.uri, classifier):
            images = [examined[k].image for k in shown]
            classes = [int(probas[k].argmax()) for k in shown]
            heats.append(list(explain.saliency(classifier, images, classes)))
        else:
            heats.append([None] * len(shown))

    calibrations = {
        model.short: classifier.calibration
        for model, classifier in zip(models, classifiers, strict=True)
    }
    table = predictions.results_table(examined, outputs, calibrations)
    usable = sum(e.ok for e in examined)
    st.subheader(f"{usable} of {len(examined)} images classified")
    st.dataframe(table, hide_index=True)
    st.download_button(
        "Download the table (CSV)",
        table.to_csv(index=False).encode(),
        file_name="predictions.csv",
        mime="text/csv",
        key="csv",
    )
    if usable > DETAILS:
        st.caption(f"Details for the first {DETAILS} images; the table lists all {usable}.")
    for n, k in enumerate(shown):
        probas = [out[k] for out in outputs.values()]
        maps = [per_model[n] for per_model in heats]
        show_details(examined[k], models, classifiers, probas, maps, show_steps)


main()
