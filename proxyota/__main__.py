"""Allow ``python -m proxyota``."""

from proxyota.cli import main

raise SystemExit(main())
