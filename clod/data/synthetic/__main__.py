"""``python -m clod.data.synthetic``: see :mod:`clod.data.synthetic.cli`."""

from clod.data.synthetic.cli import main

raise SystemExit(main())
