"""``python -m pysens …``: the command line, also the entry point for ``torchrun --nproc_per_node=N -m pysens …``."""

from pysens.cli import main

raise SystemExit(main())
