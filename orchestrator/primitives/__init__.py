"""Primitives every layer uses and that import nothing of orch above them: errors, the clock,
names, labels, the kinds of VM, results."""
