"""The model's two sample rates, each defined once and named for its side of the conversation.

Everything the model hears (recordings, the microphone, a video's sound) is resampled to
INPUT_SAMPLE_RATE before its log-mel features are computed; everything it says comes out of
Token2Wav at OUTPUT_SAMPLE_RATE. Frame and code rates derive from these where they are used.
"""

INPUT_SAMPLE_RATE = 16_000  # Hz: the audio encoder's Whisper features (10 ms hop, 160 samples)
OUTPUT_SAMPLE_RATE = 24_000  # Hz: BigVGAN's waveform (100 mel frames/s x 240 samples per frame)
