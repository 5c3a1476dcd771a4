"""Command line of the course's library, with the same MLflow store as the chapters.

python -m fmnist_lib train MODEL [--profile quick|full] [--set key=value]
python -m fmnist_lib register [--profile quick|full]
python -m fmnist_lib champion
python -m fmnist_lib tune STUDY [--create] [--trials N | --until N] [--profile quick|full]
python -m fmnist_lib serve [MODEL] [--host HOST] [--port PORT] [--workers N]
python -m fmnist_lib team add MEMBER [--credentials FILE]
python -m fmnist_lib train-surface-mask [--composites N] [--epochs N] [--output FILE]
"""

from __future__ import annotations

import argparse
import ast
import sys

from .acquisition import DatasetError
from .config import ConfigError, profile_named
from .registry import CHAMPION_URI


def parse_value(text: str):
    """A command-line value as the Python literal it spells (int, float, bool, None, tuple; a
    list becomes a tuple), a comma-separated list as a tuple, anything else as a str."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        # Not a literal: a word (relu, warmup-cosine), or words and numbers (relu,3).
        if "," in text:
            return tuple(parse_value(part.strip()) for part in text.split(",") if part.strip())
        return text
    # Sizes are tuples in the hyperparameters (hidden_units=(512, 256)); MLflow logs a list as
    # [512, 256], which would make the same run look different.
    return tuple(value) if isinstance(value, list) else value


def build_parser() -> argparse.ArgumentParser:
    """The command line: one subcommand per task, its function in ``func``."""
    from . import surface_mask
    from .catalogue import MODELS

    parser = argparse.ArgumentParser(prog="python -m fmnist_lib", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    train_parser = commands.add_parser(
        "train",
        help="train one model, tracked in MLflow",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="models:\n"
        + "\n".join(f"  {name:<16}{spec.description}" for name, spec in MODELS.items()),
    )
    train_parser.add_argument("model", choices=list(MODELS))
    train_parser.add_argument("--profile", help="quick or full (default: $FMNIST_PROFILE)")
    train_parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a hyperparameter, e.g. --set epochs=5 --set C=3",
    )
    train_parser.set_defaults(func=_train)
    mask_parser = commands.add_parser(
        "train-surface-mask",
        help="retrain the network that finds a garment on a textured surface (surface_mask.onnx)",
    )
    mask_parser.add_argument(
        "--composites", type=int, default=surface_mask.COMPOSITES, help="training renderings"
    )
    mask_parser.add_argument(
        "--epochs", type=int, default=surface_mask.EPOCHS, help="passes over the composites"
    )
    mask_parser.add_argument("--output", help="the ONNX file to write (default: the library's)")
    mask_parser.set_defaults(func=_train_surface_mask)
    register_parser = commands.add_parser(
        "register",
        help="register the best run of each model; promote the best of all to champion",
    )
    register_parser.add_argument("--profile", help="only runs of this profile (default: all)")
    register_parser.set_defaults(func=_register)
    champion_parser = commands.add_parser(
        "champion", help="say which model is the champion, or how to make one"
    )
    champion_parser.set_defaults(func=_champion)
    tune_parser = commands.add_parser(
        "tune",
        help="run trials of an Optuna study of the dropout CNN (one worker)",
        description="Run trials of a hyperparameter study. Create the study once (--create), "
        "then start as many workers as you like on the same storage "
        "($FMNIST_OPTUNA_STORAGE, default optuna.db).",
    )
    tune_parser.add_argument("study", help="the study's name")
    tune_parser.add_argument("--create", action="store_true", help="create it if it is new")
    runs = tune_parser.add_mutually_exclusive_group()
    runs.add_argument("--trials", type=int, default=1, help="trials to run here (1)")
    runs.add_argument(
        "--until", type=int, metavar="N",
        help="run trials until the study holds N finished ones (all workers together)",
    )  # fmt: skip
    tune_parser.add_argument("--profile", help="quick or full, for --create")
    tune_parser.set_defaults(func=_tune)
    serve_parser = commands.add_parser(
        "serve",
        help="serve a model as a REST API (the API of `mlflow models serve`)",
        description="Serve a model as the REST API of `mlflow models serve` (POST /invocations, "
        "GET /ping), with as many worker processes as you ask for.",
    )
    serve_parser.add_argument(
        "model", nargs="?", default=CHAMPION_URI,
        help="a model folder or a models:/ or runs:/ URI (default: the champion)",
    )  # fmt: skip
    serve_parser.add_argument("--host", default="127.0.0.1", help="address (127.0.0.1)")
    serve_parser.add_argument("--port", type=int, default=5001, help="port (5001)")
    serve_parser.add_argument("--workers", type=int, default=1, help="processes (1)")
    serve_parser.set_defaults(func=_serve)
    team_parser = commands.add_parser(
        "team",
        help="the teacher's accounts on a team's tracking server",
        description="Run with the teacher's (the server admin's) MLflow credentials. `add` "
        "makes a member's account with a random password written to a file (mode 600) for "
        "the member's ~/.mlflow/credentials, and lets it register each approach's best model; "
        "the champion stays the teacher's.",
    )
    team_parser.add_argument("action", choices=["add"])
    team_parser.add_argument("member", help="the member's user name")
    team_parser.add_argument(
        "--credentials", metavar="FILE", help="where to write them (MEMBER.mlflow-credentials)"
    )
    team_parser.set_defaults(func=_team)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command in ``argv`` (default: the process's arguments); its exit code."""
    from mlflow.exceptions import MlflowException

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except MlflowException as err:
        if err.error_code not in ("UNAUTHENTICATED", "PERMISSION_DENIED"):
            raise
        from .tracking import shown_uri

        print(
            f"error: {shown_uri()} refused this account ({err.error_code}): set "
            "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD, or ~/.mlflow/credentials, "
            "to an account the team's teacher gave you.",
            file=sys.stderr,
        )
        return 1


def _team(args) -> int:
    from pathlib import Path

    from .team import TeamError, add_member

    path = Path(args.credentials or f"{args.member}.mlflow-credentials")
    try:
        add_member(args.member, path)
    except TeamError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(
        f"{args.member}: account made; its password is in {path} (readable by you only). "
        "Hand the file to the member, who saves it as ~/.mlflow/credentials (chmod 600)."
    )
    return 0


def _train_surface_mask(args) -> int:
    from pathlib import Path

    from . import surface_mask

    path = surface_mask.FILE if args.output is None else Path(args.output)
    try:
        record = surface_mask.train(args.composites, args.epochs, path)
    except (DatasetError, ValueError, RuntimeError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(
        f"{path}: {record['pixels right']:.2%} of held-out pixels right, the item's "
        f"intersection over union {record['item IoU']:.2f}, in {record['minutes']:.1f} minutes"
    )
    return 0


def _train(args) -> int:
    from .catalogue import MODELS
    from .config import get_profile

    try:
        profile = profile_named(args.profile) if args.profile else get_profile()
        overrides = {}
        for item in args.set:
            key, sep, value = item.partition("=")
            if not sep:
                build_parser().error(f"--set expects KEY=VALUE, got {item!r}")
            overrides[key.strip()] = parse_value(value.strip())
        MODELS[args.model].params_with(profile, overrides)  # fails fast on a wrong name
        from .training import describe, train  # TensorFlow: seconds, so after the checks

        result = train(args.model, profile=profile, verbose=2, **overrides)
    except (ConfigError, DatasetError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(describe(result))
    print(f"MLflow run {result.run_id}, model {result.model_uri}")
    return 0


def _tune(args) -> int:
    from . import tuning
    from .redaction import redact

    try:
        if args.create:
            profile = profile_named(args.profile) if args.profile else None
            tuning.create_study(args.study, profile)
        study = tuning.run_trials(args.study, args.trials, until=args.until)
    except KeyError:  # Optuna's "Record does not exist" (before LookupError, its parent)
        print(
            f"error: no study {args.study!r} in {redact(tuning.storage_url())}: "
            "create it with --create.",
            file=sys.stderr,
        )
        return 1
    except (ConfigError, DatasetError, LookupError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    done = [t for t in study.trials if t.value is not None]
    best = max(done, key=lambda t: t.value, default=None)
    summary = f"best so far: trial {best.number}, {best.value:.4f}" if best else "no trial done"
    print(f"study {args.study}: {len(study.trials)} trials; {summary}")
    return 0


def _serve(args) -> int:
    from mlflow.exceptions import MlflowException

    from . import api
    from .artifact import ArtifactError

    if args.workers < 1:
        print("error: --workers must be 1 or more", file=sys.stderr)
        return 2
    try:
        api.serve_api(args.model, args.host, args.port, args.workers)
    except MlflowException as err:
        print(f"error: cannot load {args.model}: {err.message}", file=sys.stderr)
        return 1
    except ArtifactError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


def _register(args) -> int:
    from . import registry

    try:
        table = registry.register_best(profile_named(args.profile).name if args.profile else None)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if table.empty:
        print(
            "error: no finished run to register: train a model first, e.g. "
            "`python -m fmnist_lib train cnn`.",
            file=sys.stderr,
        )
        return 1
    print(table.to_string(index=False))
    if "refused" in table.attrs:
        print(f"note: {table.attrs['refused']}", file=sys.stderr)
    return _champion(args)


def _champion(args) -> int:
    from . import registry

    try:
        tags = registry.champion()
    except registry.NoModelError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(
        f"{registry.CHAMPION_URI} is version {tags['version']}: {tags['model']} "
        f"({tags['profile']} profile), test accuracy {float(tags['test_accuracy']):.4f}, "
        f"run {tags['run_id']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
