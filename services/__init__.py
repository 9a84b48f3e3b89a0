"""vov's gRPC services: thin servers over the vov library (services/encoder, services/decoder)."""
