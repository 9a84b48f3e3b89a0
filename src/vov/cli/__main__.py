"""`python -m vov.cli` runs the `vov` command."""

import sys

from vov.cli import main

sys.exit(main())
