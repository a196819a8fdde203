"""The guard against a Talker that misses its stop: speech may run only so far past its text.

The Talker speaks the reply's text and ends with a stop code. With quantized weights (the Fast
profile's int4 Talker differs from float32 by 37% of the largest logit on random weights at the real
size) a trained Talker might miss that stop and babble on up to its 4096 codes (82 s). A reply's
speech is bounded by its text: the reference speaks about 15 codes per text token (3.3 tokens per
second at 50 codes per second: the rate `omnidesk bench pipeline` forces), so a bound of twice that,
plus two seconds for a short reply said slowly, cuts only speech that runs far past what the text
can hold. The plan sets it where the Talker's weights are quantized (`placement.Plan.speech_bound`);
Exact keeps the reference's behaviour.
"""

from __future__ import annotations

from dataclasses import dataclass

from model.token2wav.synthesizer import CODE_RATE

REFERENCE_CODES_PER_TOKEN = 15  # the reference's speaking rate, in codes per text token


@dataclass(frozen=True)
class SpeechBound:
    """At most `codes_per_token` codes per text token of the reply, plus `slack_codes`."""

    codes_per_token: int = 2 * REFERENCE_CODES_PER_TOKEN
    slack_codes: int = 2 * CODE_RATE

    def allows(self, codes: int, text_tokens: int) -> bool:
        """Whether `codes` codes spoken so far fit the `text_tokens` text tokens sampled so far."""
        return codes <= self.codes_per_token * text_tokens + self.slack_codes
