"""qssh-sidecar transport: post-quantum crypto providers, SSH algorithms, queue service."""
