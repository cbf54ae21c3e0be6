"""``python -m statusbridge``: the command-line monitor."""

import sys

from statusbridge.cli import main

sys.exit(main())
