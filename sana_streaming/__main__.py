"""`python -m sana_streaming` runs the command line."""

import sys

from sana_streaming.cli import main

sys.exit(main())
