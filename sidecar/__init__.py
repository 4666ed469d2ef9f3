"""qssh-sidecar queue core and daemon."""
