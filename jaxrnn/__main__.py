"""``python -m jaxrnn``: see :mod:`jaxrnn.cli`."""

from jaxrnn.cli import main

raise SystemExit(main())
