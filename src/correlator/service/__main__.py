"""``python -m correlator.service``: the same as ``correlator serve``."""

from __future__ import annotations

import sys

from correlator.service.cli import main

sys.exit(main())
