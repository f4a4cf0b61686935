"""``python -m orchestrator.cli``: the ``orch`` command (how orch starts its own background
maintainer, whatever PATH holds)."""

from orchestrator.cli import main

main()
