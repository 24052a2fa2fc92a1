"""The gRPC transport: servicers, converters, errors, interceptors and the server."""
