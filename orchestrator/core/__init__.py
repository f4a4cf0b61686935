"""The core: one checkout's :class:`~orchestrator.core.context.Context` (at the bottom), and
what every verb shares: ownership, connectors, the baseline, spares, the maintainer process, steps."""
