"""`python -m bench.network`: see the package docstring."""

import sys

from bench.network.cli import main

sys.exit(main())
