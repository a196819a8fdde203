"""The desktop window: the main window and its rooms, the talk controls, the theme, the settings kept."""
