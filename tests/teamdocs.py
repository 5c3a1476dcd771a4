"""What the README (and chapter 9) tell a team to run, read from the page itself: the team tests
run exactly that."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
CHAPTER_9 = README.parent / "book" / "09_deploy.md"


def team_sql(page: Path = README) -> str:
    """The SQL ``page`` tells a team to run on its PostgreSQL server (the ``<<'SQL'`` block)."""
    found = re.search(r"<<'SQL'\n(.*?)\nSQL\n", page.read_text(encoding="utf-8"), re.S)
    assert found, f"{page.name} has no <<'SQL' ... SQL block for the team's database"
    return found[1]


def auth_ini(page: Path = README) -> str:
    """The settings of the tracking server's accounts ``page`` shows (the ``<<'INI'`` block)."""
    found = re.search(r"<<'INI'\n(.*?)\nINI\n", page.read_text(encoding="utf-8"), re.S)
    assert found, f"{page.name} has no <<'INI' ... INI block for the server's accounts"
    return found[1] + "\n"


def server_command(page: Path = README) -> list[str]:
    """The `mlflow server` command ``page`` shows a team, as a list of words."""
    found = re.search(r"^mlflow server .*?[^\\]$", page.read_text(encoding="utf-8"), re.M | re.S)
    assert found, f"{page.name} shows no `mlflow server` command"
    return found[0].replace("\\\n", " ").split()
