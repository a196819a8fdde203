"""The conversations kept on disk: the store, and the SQLite file under it."""
