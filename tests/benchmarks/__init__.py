"""Loopback benchmark: the real server against a bare baseline on the same TLS stack (``make bench``)."""
