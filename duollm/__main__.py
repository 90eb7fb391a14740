"""`python -m duollm` = the `duollm` command."""

import sys

from duollm.cli import main

sys.exit(main())
