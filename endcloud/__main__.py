"""`python -m endcloud` is the same as the `endcloud` command."""

import sys

from endcloud.cli import main

sys.exit(main())
