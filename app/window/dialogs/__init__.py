"""The window's dialogs: settings, setting up a model, and the crash report."""
