"""`python -m edgert.runtime.cli`: the same as the `edgert` console script."""

import sys

from edgert.runtime.cli import main

sys.exit(main())
