"""`python -m fastdstn ...` is the `fastdstn` console script."""
import sys

from .cli import main

sys.exit(main())
