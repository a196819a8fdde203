"""Process plumbing: logging to a file, the C libraries' chatter kept off the terminal, Qt's platform."""
