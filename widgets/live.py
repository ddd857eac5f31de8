"""The explorer's bokeh document in a live notebook: its changes sent in batches.

jupyter_bokeh sends every change of the document as a message of its own (three comm messages,
two more per binary buffer), and the browser applies and draws each one. A live refresh changes
several models at once (a streamed frame, the measured points, the scrubber), so
:class:`BatchedBokehModel` collects the changes made inside :meth:`~BatchedBokehModel.batch` and
sends them as one ``PATCH-DOC`` message, as a bokeh server does: one message and one render pass
in the browser per refresh.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from typing import Iterator

from bokeh.protocol import Protocol
from jupyter_bokeh.widgets import BokehModel


class BatchedBokehModel(BokehModel):
    """A ``jupyter_bokeh.BokehModel`` whose document changes inside :meth:`batch` go out as one
    message. Changes outside a batch are sent at once, as jupyter_bokeh sends them."""

    _batch: list | None = None

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Collect the document's changes and send them together on leaving (also after an error:
        what changed is sent). Batches do not nest: an inner one joins the outer."""
        if self._batch is not None:
            yield
            return
        self._batch = []
        try:
            yield
        finally:
            events, self._batch = self._batch, None
            if events:
                self._send_patch(events)

    def _document_patched(self, event) -> None:
        if event.setter is self:
            return
        if self._batch is not None:
            self._batch.append(event)
        else:
            self._send_patch([event])

    def _send_patch(self, events: list) -> None:
        """The messages of jupyter_bokeh's ``_document_patched``, for a list of events."""
        msg = Protocol().create("PATCH-DOC", events)
        self.send({"msg": "patch", "payload": msg.header_json})
        self.send({"msg": "patch", "payload": msg.metadata_json})
        self.send({"msg": "patch", "payload": msg.content_json})
        for buffer in msg.buffers:
            self.send({"msg": "patch", "payload": json.dumps(buffer.ref)})
            self.send({"msg": "patch"}, [buffer.to_bytes()])
