"""gRPC transport: thin servicers over `domain.coordinator.Coordinator`, and the server."""
