"""Sound: the microphone, the speakers and their pacing, the devices to choose from, voice activity."""
