"""Storage drivers: where a CT's files live and how they are mounted."""
