"""Shared fixtures: small IDX files written on the fly, a real HTTP server on 127.0.0.1, an
MLflow store with two tiny registered models for the app's tests, and a real PostgreSQL server
for the team tests."""

from __future__ import annotations

import fcntl
import http.server
import os
import re
import shutil
import subprocess
import tempfile
import threading
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from teamdocs import team_sql

from fmnist_lib import acquisition


@pytest.fixture
def images() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(5, 28, 28), dtype=np.uint8)


@pytest.fixture
def isolated_search(tmp_path, monkeypatch):
    """Point every place the loader searches at empty folders under tmp_path, so that only
    what a test puts there (or downloads) is found. Returns the download folder."""
    empty = tmp_path / "nowhere"
    monkeypatch.setattr(acquisition, "DATA_CACHE", tmp_path / "cache")
    monkeypatch.setattr(acquisition, "DEBIAN_DIR", empty)
    monkeypatch.setattr(acquisition, "KERAS_DIR", empty)
    target = tmp_path / "data"
    monkeypatch.setenv("FMNIST_DATA_DIR", str(target))
    return target


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep test output clean
        pass


class _TruncatingHandler(_Handler):
    """Announces the full length, sends half, then hangs up: an interrupted download."""

    def do_GET(self):
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return
        body = path.read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2])
        self.wfile.flush()
        self.close_connection = True


@pytest.fixture
def serve():
    """Start a real HTTP server on 127.0.0.1 serving a folder; returns its base URL."""
    servers = []

    def start(directory: Path, truncate: bool = False) -> str:
        handler = partial(_TruncatingHandler if truncate else _Handler, directory=str(directory))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="session")
def app_store(tmp_path_factory):
    """A store holding a tiny CNN and a tiny dense network (1,200 training images, one epoch),
    both registered, the better one champion. Returns its URI and the models as the app lists
    them, the champion first. Made once per test run: under pytest-xdist the first worker to
    need it trains it, the others wait for it and read it (the tests only read it)."""
    from fmnist_lib import registry
    from fmnist_lib.config import Profile
    from fmnist_lib.training import train

    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent  # every worker's base folder sits in the run's folder
    folder = shared / "app-store"
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    with open(shared / "app-store.lock", "w") as lock, pytest.MonkeyPatch.context() as patch:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        if not (folder / "complete").exists():
            shutil.rmtree(folder, ignore_errors=True)  # a worker that died half-way
            folder.mkdir()
            tiny = Profile(name="tiny", train_size=1200, test_size=200, epochs=1)
            train("cnn", profile=tiny)
            train("dense", profile=tiny)
            registry.register_best()
            (folder / "complete").touch()
        return uri, registry.registered_models()


class Postgres:
    """A PostgreSQL cluster set up with the README's SQL: ``url(database)`` is the SQLAlchemy
    URL of a database as its role (the README's, without a password: the driver reads it from
    ``$PGPASSFILE``); ``passwords`` are the roles' (for tests that check none leaks)."""

    def __init__(self, port: int, owners: dict[str, str], passwords: dict[str, str]):
        self.port, self.owners, self.passwords = port, owners, passwords

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://{self.owners[database]}@127.0.0.1:{self.port}/{database}"

    __call__ = url


@pytest.fixture(scope="session")
def postgres(tmp_path_factory):
    """A throwaway PostgreSQL cluster on 127.0.0.1 (Debian's cluster tools: `pg_createcluster`
    with its configuration in a temporary folder, not /etc), set up with the README's SQL, each
    role given a random password as the README's ``\\password`` asks for one, kept in a
    ``.pgpass`` file that ``PGPASSFILE`` names for this process and its children. Yields a
    `Postgres`; the cluster and its files are removed afterwards."""
    import pwd
    import secrets

    from fmnist_lib.processes import free_port

    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"))
    if not versions or not shutil.which("pg_createcluster"):
        pytest.skip(
            "PostgreSQL is not installed: `./course test` installs the Debian package "
            "postgresql with apt-get where it can (as root or with sudo)"
        )
    version = versions[-1].parts[-3]
    # The server refuses to run as root: as root the cluster belongs to the postgres user.
    owner = "postgres" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
    root = Path(tempfile.mkdtemp(prefix="fmnist-postgres-"))
    shutil.chown(root, owner)
    port = free_port()
    name = f"fmnist-test-{port}"
    env = {**os.environ, "PG_CLUSTER_CONF_ROOT": str(root / "etc")}
    create = ["pg_createcluster", version, name, "--user", owner, "--datadir", str(root / "data")]
    create += ["--port", str(port), "--socketdir", str(root), "--logfile", str(root / "log")]
    create += ["--start", "--", "--auth-local=trust", "--auth-host=scram-sha-256"]
    made = subprocess.run(create, env=env, capture_output=True, text=True)
    previous = os.environ.get("PGPASSFILE")
    try:
        if made.returncode != 0:
            log = (root / "log").read_text() if (root / "log").exists() else ""
            raise RuntimeError(f"pg_createcluster failed:\n{made.stdout}{made.stderr}{log}")
        sql = team_sql()
        owners = dict(re.findall(r"CREATE DATABASE (\w+) OWNER (\w+)", sql))
        roles = re.findall(r"CREATE ROLE (\w+) LOGIN", sql)
        assert set(owners.values()) <= set(roles), "the README's SQL changed"
        passwords = {role: secrets.token_urlsafe(16) for role in roles}
        # What typing each password at `\password`'s prompt does, through stdin: never argv.
        sql += "".join(f"ALTER ROLE {r} PASSWORD '{p}';\n" for r, p in passwords.items())
        psql = ["psql", "--host", str(root), "--port", str(port), "--username", owner]
        psql += ["--dbname", "postgres", "--set", "ON_ERROR_STOP=1", "--quiet"]
        subprocess.run(psql, input=sql, env=env, check=True, capture_output=True, text=True)
        pgpass = tmp_path_factory.mktemp("pgpass") / "pgpass"
        pgpass.touch(mode=0o600)
        pgpass.write_text("".join(f"127.0.0.1:{port}:*:{r}:{p}\n" for r, p in passwords.items()))
        os.environ["PGPASSFILE"] = str(pgpass)
        yield Postgres(port, owners, passwords)
    finally:
        if previous is None:
            os.environ.pop("PGPASSFILE", None)
        else:
            os.environ["PGPASSFILE"] = previous
        drop = ["pg_dropcluster", version, name, "--stop"]
        subprocess.run(drop, env=env, capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
