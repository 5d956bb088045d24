"""``python -m chatd`` is the same as the ``chatd`` command."""

from .cli import main

raise SystemExit(main())
