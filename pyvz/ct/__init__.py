"""The Container: lifecycle orchestration on top of config, storage and runtime."""
