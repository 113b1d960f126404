"""`python -m understudy.cli` runs the command line."""

import sys

from understudy.cli import main

sys.exit(main())
