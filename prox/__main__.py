"""``python -m prox``: the same as the ``prox`` command."""

import sys

from prox.cli import main

sys.exit(main())
