# SPDX-License-Identifier: Apache-2.0
"""`python -m nemotron_elastic ...` is the `nemotron-elastic` command (also under torchrun)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
