"""Token2Wav: codec codes -> mel spectrogram (flow-matching DiT) -> 24 kHz waveform (BigVGAN).

Modules: `speaker_encoder` (ECAPA-TDNN over a voice's reference mel), `dit` (the velocity
network), `sampler` (the ODE solvers and their presets), `bigvgan` (the vocoder), `weights`
(checkpoint tensors -> these modules), `synthesizer` (whole utterances, as the reference does)
and `streaming` (codes in as they arrive, audio chunks out).
"""
