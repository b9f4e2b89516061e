"""Pack every run of a GPU call for the trip back: weights.pt (float16, no optimiser state) beside each best.pt.

    python3 scripts/gpu/pack_runs.py /tmp/runs
"""

import sys
from pathlib import Path

from ferkit.checkpoint import pack, read_checkpoint, save_checkpoint

for best in sorted(Path(sys.argv[1]).glob("*/best.pt")):
    save_checkpoint(best.with_name("weights.pt"), pack(read_checkpoint(best)))
    print(f"packed {best.parent.name}")
