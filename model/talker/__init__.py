"""The Talker: the Thinker's states in, speech codec ids out, in plain PyTorch.

Modules: `network` (the decoder, its config and KV cache), `graph` (its decode step at static
shapes, a CUDA graph on CUDA), `weights` (checkpoint tensors -> the network), `quantize` (weight-only
int8 and int4, swapped in from outside) and `speech` (the speech policy: ids, options and generation as the
reference's `generate`). The names callers need are here.
"""

from model.talker.speech import REFERENCE_SAMPLING, SpeechIds, SpeechOptions, Talker, TalkerStep

__all__ = ["REFERENCE_SAMPLING", "SpeechIds", "SpeechOptions", "Talker", "TalkerStep"]
