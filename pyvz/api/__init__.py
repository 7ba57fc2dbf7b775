"""pyvzd: the HTTP API, the web console and /metrics (a front end beside cli/)."""
