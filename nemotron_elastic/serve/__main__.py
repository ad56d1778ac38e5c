# SPDX-License-Identifier: Apache-2.0
"""`python -m nemotron_elastic.serve --model DIR`: the server without the main CLI."""

import sys

from ..commands.serve import main

sys.exit(main())
