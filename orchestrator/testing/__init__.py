"""The kit for provider authors: the conformance suite every provider passes."""
