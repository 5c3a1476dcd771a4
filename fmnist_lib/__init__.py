"""fmnist_lib: the small library that the Fashion-MNIST course, its app and its tests call.

One concern per module: `config` (profile, paths, seeds), `data` (find, verify, download and
parse the dataset), `audit` (duplicates, blank images, pixel statistics), `models` (one builder
per architecture), `training` (fit, evaluate and log any model), `evaluation` (scores),
`tracking` (the MLflow store and runs), `registry` (each approach's best model, the champion),
`preprocess` (any image to 28x28, as Fashion-MNIST was made), `custom_images` (drawn garments
and product photos), `serving` (the pyfunc model the API serves), `predictions` (many images for
the app: steps, errors one by one, the results table), `explain` (where a network looked),
`tuning` (Optuna studies on shared storage), `ensemble` (soft voting, test-time augmentation),
`processes` (server processes on 127.0.0.1), `plots` (figures shared by chapters and app).
"""

import gc

from . import _compat

__version__ = "0.1.0"
_compat.apply()
# What is loaded by now (the modules, and TensorFlow's 400,000 objects when a chapter imported
# Keras first) lives as long as the process: frozen, the garbage collector stops walking it at
# every full collection and at exit (a chapter runs ~8% faster, its kernel exits 1-2 s sooner).
gc.freeze()
