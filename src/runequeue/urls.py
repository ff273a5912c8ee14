"""Connection URLs as they may be shown: in messages, logs and ``repr``, never with a password."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

# `?password=...` (redis-py and libpq both take one in the query string), and the ones named
# after what they are for (`sentinel_password=`, a Redis Sentinel's own).
_QUERY_PASSWORD = re.compile(r"(?i)((?:^|&)(?:\w+_)?password=)[^&]*")


def hide_password(url: str) -> str:
    """``url`` with its password replaced by ``***`` (any scheme: redis, postgresql, mysql...),
    whether it stands before the host or in the query string."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:  # not a URL we can take apart: show nothing of it that could be secret
        return "<unparsable URL>"
    shown = url  # edited as text: urlunsplit would drop sqlite:///'s empty host
    if password:
        userinfo, _, host = parts.netloc.rpartition("@")
        user = userinfo.partition(":")[0]
        shown = shown.replace(parts.netloc, f"{user}:***@{host}", 1)
    query = _QUERY_PASSWORD.sub(r"\1***", parts.query)
    if query != parts.query:
        shown = shown.replace(f"?{parts.query}", f"?{query}", 1)
    return shown
