"""The progress bar every long step shows: tqdm, drawn as text in a terminal and in a notebook alike.

``tqdm.auto`` draws an ipywidgets bar in a notebook. A reopened notebook whose widget state was not saved
(JupyterLab's default) shows each finished bar as "Error displaying widget: model not found"; a text bar
is written to the cell's stderr stream, redrawn in place (carriage returns), and saved with the notebook
as the true final line ("label: 100%|...| 512/512 [00:03<00:00]"). So every module imports ``tqdm`` from here.
"""

from __future__ import annotations

from tqdm.std import tqdm

__all__ = ["tqdm"]
