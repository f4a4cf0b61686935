"""The verbs: one typed function of a :class:`~orchestrator.core.context.Context` per module,
called by the CLI and the pytest plugin."""
