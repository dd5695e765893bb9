"""``python -m canrun`` is the same as the ``canrun`` console script."""

from canrun.cli import main

raise SystemExit(main())
