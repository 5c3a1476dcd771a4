"""URLs without their passwords, for logs, messages and pages."""

from __future__ import annotations

import re

# A password passed as a query parameter (libpq's ?password=, or sslpassword).
_QUERY_SECRET = re.compile(r"(?i)([?&](?:ssl)?(?:password|passwd|pwd)=)[^&#]*")


def redact(url: str) -> str:
    """A database or server URL without its password (in the user part or the query), fit for
    a log, a message or a page; anything that is not a URL, as given less what precedes an "@".
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    url = _QUERY_SECRET.sub(r"\1***", url)
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):  # not a URL SQLAlchemy reads
        parsed = None
    if parsed is None or "@" in (parsed.host or ""):  # or an "@" left unquoted in the password
        return "***@" + url.rpartition("@")[2] if "@" in url else url
    if parsed.password is None:
        return url  # as given: rendering would re-quote a path or query for nothing
    return parsed.render_as_string(hide_password=True).replace("=%2A%2A%2A", "=***")
