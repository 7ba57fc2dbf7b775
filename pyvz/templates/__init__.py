"""OS templates: the cache of archives and the builders that fill it."""
