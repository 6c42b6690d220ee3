"""Testing against Quaero: local sites (site), the services in this process (harness) or as processes
(processes), TLS certificates for test hosts (tls), and pytest fixtures (pytest_plugin). See README,
"Testing your own services against Quaero"."""
