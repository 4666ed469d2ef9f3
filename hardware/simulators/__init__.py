"""Simulated hardware for tests and demos: serial QRNG on a pty, ETSI 014 KMEs, udev trees."""
