"""``python -m dagm_helpers ...``: see :mod:`dagm_helpers.cli`."""

from .cli import main

raise SystemExit(main())
