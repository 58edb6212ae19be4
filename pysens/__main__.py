"""``python -m pysens …``: the command line, also the entry point for ``torchrun --nproc_per_node=N -m pysens …``.

Under a launcher that starts several processes (``WORLD_SIZE`` > 1) only the verbs that split their work across
ranks run (``pysens.commands.trajectories.SHARDED_VERBS``); any other verb would run N times over into the same output
folder, so it is refused with a message instead.
"""

import os
import sys

from pysens.cli import main
from pysens.commands.trajectories import SHARDED_VERBS


def _refuse_unsharded(argv: list[str]) -> int:
    try:
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        world_size = 1
    verb = next((a for a in argv if not a.startswith("-")), None)
    if world_size > 1 and verb is not None and verb not in SHARDED_VERBS:
        if os.environ.get("RANK", "0") == "0":
            print(
                f"error: `pysens {verb}` does not split its work across ranks; run it as one process "
                f"(under torchrun: {', '.join(SHARDED_VERBS)})",
                file=sys.stderr,
            )
        return 2
    return 0


raise SystemExit(_refuse_unsharded(sys.argv[1:]) or main())
