"""Peak extra memory of one BAM forward + backward (training mode): minibam vs PyTorch, each in a fresh process.

    python benchmarks/bench_memory.py [options of minibam bench]

The same as ``minibam bench --suite memory`` (see ``minibam bench --help``): the timing lives in
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
    sys.exit(main(["bench", "--suite", "memory", *sys.argv[1:]]))
