"""`python -m gateway`: the gateway process (what `membership run` starts beside the services)."""

from gateway.server import main

raise SystemExit(main())
