"""``python -m minibam``: the same command line as the ``minibam`` script."""

import sys

from minibam.cli import main

sys.exit(main())
