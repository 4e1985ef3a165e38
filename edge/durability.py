"""When a click reaches disk, relative to its recipient's 302: the whole story, in order.

1. ``RedirectHandler.respond`` (edge/redirect.py) adds the click to the spool's buffer (``Spool.add``) and
   returns the 302's bytes. Nothing is written yet.
2. At the end of the event-loop pass, before any answer of that pass is written, the HTTP server
   (edge/protocol.py) calls ``ClickDurability.flush``: one ``write()`` puts the clicks of every request read
   in the pass into the spool's segment file. From here on a crash of the edge process (kill -9, OOM) loses
   none of them: the bytes are in the kernel's page cache.
3. The 302s of that pass are written to their connections.
4. fsync, for a machine crash or power loss (CLICKEDGE_FSYNC): by default the syncer (edge/syncer.py)
   fdatasyncs the spool every 0.2 s, in a worker thread, covering every click written before it started.
   With ``always``, each redirect's answer says ``wait``: the HTTP server holds it until
   ``ClickDurability.wait`` returns, which is after a sync that covered its click (clicks waiting together
   share one fsync).
5. The shipper (edge/shipper.py) sends spooled clicks to the collector, and the spool forgets them only after
   the collector's 200, which it sends after its COMMIT.

A click the spool cannot take (full, or the disk failing) is counted as not durable; its recipient still
lands.
"""

from __future__ import annotations

from edge.spool import Spool
from edge.syncer import Syncer


class ClickDurability:
    """The HTTP server's durability hooks (edge.protocol.Durability) for the edge: steps 2 and 4 above."""

    def __init__(self, spool: Spool, syncer: Syncer) -> None:
        self._spool = spool
        self._syncer = syncer

    def flush(self) -> None:
        self._spool.flush()

    async def wait(self) -> None:
        await self._syncer.wait()
