"""``python -m mailpool``."""

from __future__ import annotations

import sys

from mailpool.cli import main

sys.exit(main())
