"""`python -m engine.cli` is `allblast-engine` (torchrun starts programs this way)."""
import sys

from . import main

sys.exit(main())
