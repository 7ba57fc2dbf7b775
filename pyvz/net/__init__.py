"""Networking of CTs: routed (venet) addresses and per-CT host firewall rules."""
