"""``python -m qconfig.cli``: the same as the ``qconfig`` console script."""

import sys

from qconfig.cli import main

sys.exit(main())
