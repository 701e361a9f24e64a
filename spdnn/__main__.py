"""``python -m spdnn`` runs the command line (same as the ``spdnn`` script)."""

from spdnn.cli import main

raise SystemExit(main())
