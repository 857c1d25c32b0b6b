"""``python -m adpo.cli`` = ``adpo``."""

from adpo.cli import main

raise SystemExit(main())
