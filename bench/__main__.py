"""`python -m bench`: the same as `dlpipe bench`."""

import sys

from bench.cli import main

sys.exit(main())
