"""The item viewer's Python side, shared by every view with thumbnails (FeatureBrowser, ConceptSearch,
FailureExplorer): the ``item`` trait the viewer draws and the ``item`` message that opens or closes it.

The viewer's JS is ``itemViewer`` in ``static/common.js``; what it shows of an item is
:meth:`~sae.widgets.workbench.Workbench.item_details`, so every view shows the same thing."""

from __future__ import annotations

import traitlets

from sae.errors import SaeError


def row_of(msg: dict) -> int:
    """The item row a message names (bad input is an error shown in the view, not a crash)."""
    try:
        return int(msg["row"])
    except (KeyError, TypeError, ValueError):
        raise SaeError(f"an item message needs an integer row, not {msg.get('row')!r}") from None


class ItemViewing(traitlets.HasTraits):
    """Mixin for a :class:`~sae.widgets._base.View` with a ``wb`` workbench: click a thumbnail to see the item large."""

    item = traitlets.Dict().tag(sync=True)
    """The item open in the viewer (see :meth:`item_details`); ``{}`` when the viewer is closed."""

    def item_details(self, row: int, n_concepts: int = 8) -> dict:
        """What the viewer shows of one item (see :meth:`Workbench.item_details`)."""
        return self.wb.item_details(row, n_concepts)  # type: ignore[attr-defined]

    def open_item(self, row: int) -> None:
        """Open an item in the viewer (``row`` < 0 closes it)."""
        self.item = {}
        if row >= 0:
            self.item = self.item_details(row)

    def _on_item(self, msg: dict) -> None:
        self.open_item(row_of(msg))
