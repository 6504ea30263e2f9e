"""``python -m sae.cli``: the ``sae`` command."""

import sys

from sae.cli.main import main

sys.exit(main())
