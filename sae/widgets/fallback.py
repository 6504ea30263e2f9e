"""What a reopened notebook shows of a view: a static copy beside it, visible whenever the live view is not.

JupyterLab picks a widget output's ``application/vnd.jupyter.widget-view+json`` entry whenever it can,
so a ``text/html`` entry in the same bundle is never seen: reopened with JupyterLab's default settings
(widget state not saved), the output says "Error displaying widget: model not found" and nothing else.
So a view is displayed as two outputs: first a static, escaped HTML copy of what it shows (published
here as its own ``display_data``), then the widget. The live view's JS (``live`` in common.js) hides
the copy it is paired with (by the token in the view's ``_fallback_id``); when the view cannot be drawn,
the copy stays visible with a line saying why it is static. nbconvert, GitHub and untrusted notebooks
show the copy as well.

A view restored from saved widget state without its kernel draws but cannot act: it pings the kernel
on render and, with no answer within a few seconds, shows a banner saying so (``watchLiveness``).
"""

from __future__ import annotations

import html
import secrets
from typing import Any

import ipywidgets

NOTE = ("static copy, as when the cell ran: the live view needs this notebook's kernel "
        "(run the cell again); it is hidden while the live view is shown")


def wrap(static_html: str, token: str) -> str:
    """The static copy as published: a marked box (the token lets the live view find it) with a note."""
    note = f"<div style='font-size:11px;opacity:0.75;font-style:italic'>{html.escape(NOTE)}</div>"
    return f"<div class='saew-fallback saew-fallback-{token}' data-saew-fallback='{token}'>{note}{static_html}</div>"


def publish(target: Any, static_html: str) -> str | None:
    """Display ``static_html`` as its own output, paired with the view ``target`` (a
    :class:`~sae.widgets._base.View`, whose JS hides the copy while it is live); the token, or None outside a
    kernel (there is no notebook to publish to)."""
    from IPython.display import display

    from sae.display import in_kernel

    if not in_kernel() or not static_html:
        return None
    token = secrets.token_hex(8)
    target._fallback_id = token
    display({"text/html": wrap(static_html, token)}, raw=True)
    return token


def widget_bundle(widget: ipywidgets.Widget) -> dict:
    """The widget's own mime bundle (``text/plain`` + the widget view), without publishing a copy."""
    data = ipywidgets.DOMWidget._repr_mimebundle_(widget) if isinstance(widget, ipywidgets.Widget) else widget._repr_mimebundle_()
    return (data[0] if isinstance(data, tuple) else data) or {}


class StaticFallback:
    """Mixin for a widget displayed with a static copy (see the module doc): define :meth:`static_html`."""

    def static_html(self) -> str:
        """Escaped HTML of what the view shows now ("" for none)."""
        return ""

    def fallback_target(self) -> Any:
        """The view whose JS hides the copy (the widget itself, or the anywidget inside a container)."""
        return self

    def live_bundle(self, static_html: str | None = None) -> dict:
        """Publish the static copy (``static_html``, default :meth:`static_html`), then return the widget's bundle."""
        publish(self.fallback_target(), self.static_html() if static_html is None else static_html)
        return widget_bundle(self)

    def __repr__(self) -> str:
        """The ``text/plain`` of the widget's output (what an untrusted notebook shows beside the copy)."""
        return f"{type(self).__name__}: an interactive view (it needs this notebook's kernel: run the cell)"

    def _repr_mimebundle_(self, **kwargs: dict) -> tuple[dict, dict] | None:
        """What IPython displays: the copy is published first, then this bundle (data, metadata) of the widget."""
        return self.live_bundle(), {}
