"""``python -m arcanos_flows.cli``: the same as the ``arcanos-flows`` command."""

from arcanos_flows.cli.app import main

main()
