"""`python -m exporter` is the same as the `inference-exporter` command."""

from exporter.cli import main

raise SystemExit(main())
