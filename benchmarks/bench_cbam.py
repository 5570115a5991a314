"""Time CBAM forward + backward (training mode), minibam and PyTorch each in its own processes.

    python benchmarks/bench_cbam.py [options of minibam bench]

The same as ``minibam bench --suite cbam`` (see ``minibam bench --help``): the timing lives in
:mod:`minibam.bench`, so that the scripts and the command cannot drift apart.
"""

from __future__ import annotations

import sys
from pathlib import Path

try:
    from minibam.cli import main
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from minibam.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "--suite", "cbam", *sys.argv[1:]]))
