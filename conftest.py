"""Repository-wide pytest settings: the example notebooks (collected by nbmake) run on the small demo."""

import os

os.environ.setdefault("SAE_NOTEBOOK_SMALL", "1")
