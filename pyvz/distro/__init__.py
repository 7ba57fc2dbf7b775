"""Per-distribution knowledge: which files hold the hostname, users, and how init halts."""
