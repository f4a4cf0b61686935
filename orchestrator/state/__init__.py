"""What orch records: the records and their codec, the locked store, run leases, the registry of
checkouts, where a checkout lives, and the generated inventories."""
