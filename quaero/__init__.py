"""Quaero: authenticated crawl jobs over gRPC. The package both services and the CLI share.

quaero.api holds the generated stubs (never edited by hand); the rest is written here.
"""
