"""The command line: `omnidesk` and its commands (ask, chat, doctor, the selftest)."""
