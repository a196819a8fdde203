"""Capture: the webcam and the screen."""
