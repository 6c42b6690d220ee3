"""Quaero manager service: owns the jobs database and serves it over gRPC."""
