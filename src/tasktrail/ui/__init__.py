"""``tasktrail ui``: a local web dashboard over a tasktrail database.

Needs the ``ui`` extra (``pip install 'tasktrail[ui]'``: Starlette, uvicorn, Jinja2);
``import tasktrail`` never imports this package. Start it with ``tasktrail ui``, or from
Python::

    import asyncio
    from tasktrail.ui import Settings, serve

    stop = asyncio.Event()
    await serve(Settings("tasks.db"), host="127.0.0.1", port=8765, stop=stop,
                announce=lambda url, token, dash: print(url))
"""

from __future__ import annotations

from tasktrail.ui._app import create_app
from tasktrail.ui._dashboard import Dashboard, Settings
from tasktrail.ui._serve import serve

__all__ = ["Dashboard", "Settings", "create_app", "serve"]
