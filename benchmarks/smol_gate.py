"""The SmolLM2 gate timed per stage (wall time, peak memory): benchmarks/gate.py for smol.

python benchmarks/smol_gate.py [--samples N] [--temperature T[,T2]]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gate import main

if __name__ == "__main__":
    sys.exit(main(["--experiment", "smol", *sys.argv[1:]]))
