"""Rich display for result objects: the live widget in a kernel, always with a static HTML fallback.

A reopened notebook without its kernel, an untrusted notebook, GitHub or nbconvert cannot run the
widget; they pick the ``text/html`` entry of the same bundle, so results still show.
"""

from __future__ import annotations

import warnings
from typing import Callable

WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


def in_kernel() -> bool:
    """True inside a running IPython kernel (where widget comms work)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    ip = get_ipython()
    return ip is not None and getattr(ip, "kernel", None) is not None


def bundle(static_html: str, plain: str, make_widget: Callable[[], object] | None) -> dict:
    """``{text/plain, text/html}`` plus the widget view when a kernel can host it."""
    out = {"text/plain": plain, "text/html": static_html}
    if make_widget is not None and in_kernel():
        try:
            widget = make_widget()
            view = widget._repr_mimebundle_() or {}
            if isinstance(view, tuple):  # anywidget returns (data, metadata)
                view = view[0]
            if WIDGET_MIME in view:
                out[WIDGET_MIME] = view[WIDGET_MIME]
        except Exception as e:  # the static view is still correct; say why the live one is missing
            warnings.warn(f"the interactive view could not be built ({type(e).__name__}: {e}); showing the static table")
    return out
