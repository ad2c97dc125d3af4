"""The Allmende coordinator: splits jobs into signed work units, leases them to volunteers,
validates results by quorum and assimilates accepted rows into signed datasets."""
