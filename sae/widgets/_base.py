"""The anywidget base every sae-workbench view shares: ES module + theme-aware CSS, errors shown in the view.

An error lasts until the next action (each handler starts from a clean slate), except a *standing*
error (:meth:`View.stand`): a refusal that stays visible through unrelated actions (a latency report,
a click elsewhere) until the view withdraws it (:meth:`View.withdraw`), e.g. on the next successful search.

A reopened notebook must show something true (see :mod:`sae.widgets.fallback`): every view answers the
view's ``ping`` with a ``pong``, so a view restored from saved widget state without its kernel says it is
not live, and the static copy published beside a view is hidden only while the live view draws."""

from __future__ import annotations

import traceback
from pathlib import Path

import anywidget
import traitlets

from sae.errors import SaeError
from sae.widgets.fallback import StaticFallback

STATIC = Path(__file__).parent / "static"


def asset(*names: str) -> str:
    """Static files joined (the shared helpers first, then the view's own code); the view's ``render`` is
    wrapped in ``live`` (common.js), which hides the view's static copy and says when no kernel answers."""
    code = "\n".join((STATIC / n).read_text(encoding="utf-8") for n in names)
    return code.replace("export default { render };", "export default { render: live(render) };")


class View(StaticFallback, anywidget.AnyWidget):
    """A view over the Python API: user actions arrive as messages, results go back as traits; displayed with
    the static copy of :meth:`static_html` beside it (see :mod:`sae.widgets.fallback`)."""

    _css = traitlets.Unicode(asset("common.css")).tag(sync=True)
    error = traitlets.Unicode("").tag(sync=True)
    """The last error, in words (bad input never fails silently)."""
    _standing: str = ""
    """The standing error (see :meth:`stand`); "" when there is none."""
    _fallback_id = traitlets.Unicode("").tag(sync=True)
    """The token of the static copy published beside this view (:func:`sae.widgets.fallback.publish`)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.on_msg(self._dispatch)

    def stand(self, message: str) -> None:
        """Show ``message`` as the error and keep it shown through later actions until :meth:`withdraw`."""
        self._standing = self.error = message

    def withdraw(self) -> None:
        """End a standing error (the view has a good answer again)."""
        if self.error == self._standing:
            self.error = ""
        self._standing = ""

    def _dispatch(self, _widget, content, buffers) -> None:
        kind = content.get("type", "") if isinstance(content, dict) else ""
        if kind == "ping":  # the view asks whether a kernel holds it (a restored notebook's view gets no answer)
            self.send({"type": "pong"})
            return
        handler = getattr(self, f"_on_{kind}", None)
        if handler is None:
            self.error = f"unknown action {kind!r}"
            return
        self.guard(handler, content)

    def guard(self, fn, *args) -> bool:
        """Run ``fn``; an :class:`SaeError` (bad input) is shown in the view, anything else also logged.
        The error is reset before (not after) so an inner failure stays visible: to the standing error
        when there is one (a refusal outlives unrelated actions), else to nothing."""
        self.error = self._standing
        try:
            fn(*args)
        except SaeError as e:
            self.error = str(e)
            return False
        except Exception as e:  # an unexpected bug: show it rather than leave the view stale
            self.error = f"{type(e).__name__}: {e}"
            traceback.print_exc()
            return False
        return True
