"""`python -m sandlot.cli`: the `sandlot` command line."""

from __future__ import annotations

import sys

from sandlot.cli import main

sys.exit(main())
