"""Keras parts the catalogue's training needs and Keras lacks (imports TensorFlow)."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="fmnist_lib")
class SmoothedCrossentropy(keras.losses.Loss):
    """Cross-entropy on class ids with label smoothing: the target gives ``smoothing`` of its
    weight to all classes evenly, so that the network is never pushed to be 100 % sure.
    (Keras has label smoothing only for one-hot targets.)"""

    def __init__(self, smoothing=0.1, name="smoothed_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.smoothing = smoothing

    def call(self, y_true, y_pred):
        classes = ops.shape(y_pred)[-1]
        one_hot = ops.one_hot(ops.cast(ops.reshape(y_true, (-1,)), "int32"), classes)
        return keras.losses.categorical_crossentropy(
            one_hot, y_pred, label_smoothing=self.smoothing
        )

    def get_config(self):
        return {**super().get_config(), "smoothing": self.smoothing}

    def __repr__(self):  # stable: `catalogue.is_default` compares losses by their text
        return f"SmoothedCrossentropy(smoothing={self.smoothing})"
