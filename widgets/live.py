"""The explorer's bokeh document in a live notebook: its changes sent in batches, and not echoed.

jupyter_bokeh sends every change of the document as a message of its own (three comm messages,
two more per binary buffer), and the browser applies and draws each one. A live refresh changes
several models at once (a streamed frame, the measured points, the scrubber), so
:class:`BatchedBokehModel` collects the changes made inside :meth:`~BatchedBokehModel.batch` and
sends them as one ``PATCH-DOC`` message, as a bokeh server does: one message and one render pass
in the browser per refresh.

jupyter_bokeh's frontend (4.x) also sends the kernel back every change the kernel made, once the
browser has applied it: every streamed frame and every replaced column, images included (3.3 MB
for three runs of 200 steps), and the kernel streamed each echoed frame into its own copy a second
time. BokehJS marks the changes it applies from the kernel ``sync: false``, and a bokeh server's
client does not send those back; :data:`SYNCED_ONLY_JS` makes the document do the same, and the
kernel drops streamed or patched columns that still come from the browser, which never streams by
itself here.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from typing import Iterator

from bokeh.document import Document
from bokeh.models import CustomJS
from bokeh.protocol import Protocol
from jupyter_bokeh.widgets import BokehModel

SYNCED_ONLY_JS = """
// Run once, when the document is ready: pass the document's listeners (jupyter_bokeh's, which
// sends each change to the kernel) only the changes made in the browser, not those BokehJS
// applied from the kernel (sync: false), as a bokeh server's client does.
const doc = cb_obj;
if (!doc.__chromaviz_synced_only) {
  doc.__chromaviz_synced_only = true;
  const trigger = doc._trigger_on_change;
  doc._trigger_on_change = function (event) {
    const events = event.events ?? [event];  // a DocumentEventBatch, or one event
    const synced = events.filter((e) => e.sync !== false);
    if (synced.length === events.length) trigger.call(this, event);
    else for (const e of synced) trigger.call(this, e);
  };
}
"""
"""BokehJS run at ``document_ready``: browser → kernel messages only for changes made in the browser."""

BROWSER_NEVER_SENDS = ("ColumnsStreamed", "ColumnsPatched")
"""Changes the explorer's browser view never makes itself: arriving from it, they are echoes."""


class BatchedBokehModel(BokehModel):
    """A ``jupyter_bokeh.BokehModel`` whose document changes inside :meth:`batch` go out as one
    message. Changes outside a batch are sent at once, as jupyter_bokeh sends them."""

    _batch: list | None = None

    def update_from_model(self, model) -> None:
        """jupyter_bokeh's, after giving ``model`` a document if it has none, with
        :data:`SYNCED_ONLY_JS` at ``document_ready`` (once)."""
        if model.document is None:
            Document().add_root(model)
        ready = model.document.callbacks.js_event_callbacks.get("document_ready", [])
        if not any(getattr(cb, "code", None) == SYNCED_ONLY_JS for cb in ready):
            model.document.js_on_event("document_ready", CustomJS(code=SYNCED_ONLY_JS))
        super().update_from_model(model)

    def _sync_model(self, model, content: dict, buffers: list) -> None:
        """jupyter_bokeh's handler of the browser's messages, less echoes of columns (see the module)."""
        if content.get("kind") in BROWSER_NEVER_SENDS:
            return
        super()._sync_model(model, content, buffers)

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
        """The messages of jupyter_bokeh's ``_document_patched``, for a list of events (less those
        :func:`superseded` in it)."""
        msg = Protocol().create("PATCH-DOC", superseded(events))
        self.send({"msg": "patch", "payload": msg.header_json})
        self.send({"msg": "patch", "payload": msg.metadata_json})
        self.send({"msg": "patch", "payload": msg.content_json})
        for buffer in msg.buffers:
            self.send({"msg": "patch", "payload": json.dumps(buffer.ref)})
            self.send({"msg": "patch"}, [buffer.to_bytes()])


def superseded(events: list) -> list:
    """``events`` less the rows streamed or patched into a source whose columns were replaced earlier
    in the same list: the replacement is serialized when the message is made, with the source's data
    as it is then, rows streamed after it included, so sending the stream too would add them twice
    (a run drawn once while sampling showed its first frame twice on the scrubber)."""
    from bokeh.document.events import ColumnDataChangedEvent, ColumnsPatchedEvent, ColumnsStreamedEvent, ModelChangedEvent

    replaced, kept = set(), []
    for event in events:
        model = getattr(event, "model", None)
        if isinstance(event, ColumnDataChangedEvent) or (isinstance(event, ModelChangedEvent) and event.attr == "data"):
            replaced.add(id(model))
        elif isinstance(event, (ColumnsStreamedEvent, ColumnsPatchedEvent)) and id(model) in replaced:
            continue
        kept.append(event)
    return kept
