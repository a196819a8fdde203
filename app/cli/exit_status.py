"""The command line's exit statuses, shared by `omnidesk` and the commands it runs."""

EXIT_ERROR = 1
# As a shell reports a process ended by SIGINT (128 + 2).
EXIT_INTERRUPTED = 130
