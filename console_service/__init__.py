"""The operator console: a web application over the two gRPC services (pages rendered on the server,
htmx for partial updates, server-sent events for live runs). It has no database of its own."""
