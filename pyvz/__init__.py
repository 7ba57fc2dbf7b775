"""pyvz: OpenVZ-style system containers on mainline Linux."""

__version__ = "0.1.0"
