"""The file MLflow runs to rebuild the serving model when it loads an artifact ("models from
code"): the wrapper is created here rather than unpickled, and `load_context` attaches the
trained model saved beside it."""

from mlflow.models import set_model

from fmnist_lib.serving import Classifier

set_model(Classifier())
