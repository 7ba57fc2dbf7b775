"""The container runtime: LXC behind a small interface."""
