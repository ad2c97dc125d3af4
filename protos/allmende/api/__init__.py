"""The clients of the coordinator's gRPC API that belong to neither role's internals.

`channel` opens a channel to a coordinator (TLS pinned through the coordinator key) and turns
gRPC failures into `RemoteError`; `client.ApiClient` makes the operators' and researchers'
calls (jobs, administration, `coordinator top`'s overview, datasets); `dataset` downloads and
verifies a job's dataset. The volunteer's connection (allmende.client.connection) adds its
signed calls to the same client. Like the rest of protos/, this package imports neither the
client nor the coordinator (an import-linter contract in pyproject.toml says so).
"""
