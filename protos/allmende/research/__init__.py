"""What a researcher runs on a downloaded dataset folder, beyond checking its signature:
recomputing a sample of rows with the pinned model (`recompute`), and nearest-neighbour
search over an embedding column (`index`, `search`).

Like the rest of protos/, this package imports neither the client nor the coordinator (an
import-linter contract says so): a kind's compute code is reached only through
allmende.protocol.kinds.compute, which imports it by name from the installed
`allmende[volunteer]` extra.
"""
