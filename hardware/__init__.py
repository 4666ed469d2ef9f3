"""qssh-sidecar hardware: entropy sources, health tests, QKD client, tiers, simulators."""
