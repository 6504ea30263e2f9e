"""Rich display for result objects: the live widget in a kernel, always with a static HTML fallback.

A reopened notebook without its kernel, an untrusted notebook, GitHub or nbconvert cannot run the
widget. JupyterLab never falls back to a ``text/html`` entry beside a widget view it cannot draw (it
says "model not found"), so in a kernel the static HTML is published as its own output just before the
widget, paired with it (:mod:`sae.widgets.fallback`: the live view hides it while it is drawn); outside a
kernel the bundle is the static HTML alone.

Domain results never import the UI: they call :func:`bundle` with a *kind* ("search_result",
"label_set", "audit_report") and themselves; the registry maps each kind to a view factory, given as
``"module:function"`` and imported only when a kernel asks for the live view (or registered as a
callable with :func:`register_view`, e.g. by a plugin with views of its own).
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable
from typing import Any

WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


def in_kernel() -> bool:
    """True inside a running IPython kernel (where widget comms work)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    ip = get_ipython()
    return ip is not None and getattr(ip, "kernel", None) is not None


_VIEWS: dict[str, str | Callable[[Any], object]] = {
    "search_result": "sae.widgets.live:search_result_view",
    "label_set": "sae.widgets.live:label_set_view",
    "audit_report": "sae.widgets.live:audit_report_view",
}


def register_view(kind: str, factory: str | Callable[[Any], object]) -> None:
    """Show results of ``kind`` live with ``factory(result) -> widget`` (a callable or ``"module:function"``)."""
    _VIEWS[kind] = factory


def view_factory(kind: str) -> Callable[[Any], object]:
    """The registered factory of ``kind``, imported on first use."""
    factory = _VIEWS[kind]
    if isinstance(factory, str):
        module, _, name = factory.partition(":")
        factory = _VIEWS[kind] = getattr(importlib.import_module(module), name)
    return factory


def bundle(static_html: str, plain: str, kind: str | None = None, result: Any = None) -> dict:
    """``{text/plain, text/html}`` plus the live view of ``result`` (registered for ``kind``) when a kernel can host it."""
    out = {"text/plain": plain, "text/html": static_html}
    if kind is not None and in_kernel():
        try:
            widget: Any = view_factory(kind)(result)  # whatever the factory builds (an anywidget)
            paired = hasattr(widget, "live_bundle")  # publishes the static copy as its own output first
            view = widget.live_bundle(static_html) if paired else widget._repr_mimebundle_() or {}
            if isinstance(view, tuple):  # anywidget returns (data, metadata)
                view = view[0]
            if WIDGET_MIME in view:
                out[WIDGET_MIME] = view[WIDGET_MIME]
                if paired:
                    del out["text/html"]  # shown once, by the paired copy
        except Exception as e:  # the static view is still correct; say why the live one is missing
            warnings.warn(f"the interactive view could not be built ({type(e).__name__}: {e}); showing the static table", stacklevel=2)
    return out
