"""`python -m membership_cli` is the `membership` command."""

from membership_cli.main import main

raise SystemExit(main())
