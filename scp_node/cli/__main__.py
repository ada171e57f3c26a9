"""`python -m scp_node.cli`: the `scp-node` command without its installed script (the tests run it so)."""

import sys

from scp_node.cli import main

if __name__ == "__main__":
    sys.exit(main())
