"""The runtime admin channel: a root-only Unix socket speaking JSON lines.

One request per line, `{"command": NAME, "args": {...}}`; one reply per line,
`{"ok": true, "result": ...}` or `{"ok": false, "error": "..."}`. The
`events` command instead streams one event per line until the client leaves.
"""

from understudy.admin.client import AdminError, request, stream
from understudy.admin.server import DEFAULT_SOCKET, AdminServer, Handler

__all__ = ["DEFAULT_SOCKET", "AdminError", "AdminServer", "Handler", "request", "stream"]
