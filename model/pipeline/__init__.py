"""The streaming voice pipeline: a `Conversation` answers turns in text and speech at once.

A turn runs three stages, each on its own thread, joined by bounded queues:

    thinker   decodes the reply; each token's text goes out at once, and each token fed
              back through the model (its hidden state and input embedding) goes to the Talker;
    talker    turns those states into codec ids, one per step, as soon as each state is there;
    token2wav turns codes into 24 kHz audio chunks as soon as its block structure allows.

The caller's thread iterates `Conversation.turn`, which yields plain events (frozen
dataclasses) from one queue; it blocks only there. Stages block only on their input
queue (waking every POLL_S seconds to notice a cancel) and on their own computation, so
a cancel stops them within one decode step. With speech off, only the Thinker runs and
the Talker and Token2Wav are never loaded. Timing marks are `time.perf_counter()` seconds
since the turn's input was ready.

Modules: `events` (what a turn yields), `conversation` (the history, the prompt, `Conversation.turn`)
`stages` (one turn's threads, the queues between them, and the Thinker-to-Talker feed) and `listening`
(a question while it is asked: its pictures and finished audio blocks encoded and in the cache before
the release).
"""

from model.pipeline.conversation import Conversation, Exchange
from model.pipeline.events import (
    AudioChunk,
    ContextTrimmed,
    Event,
    Mark,
    RecordingCut,
    SpeechCut,
    TextDelta,
    TurnFinished,
)
from model.pipeline.listening import Listening
from model.pipeline.options import TurnOptions

__all__ = [
    "AudioChunk",
    "ContextTrimmed",
    "Conversation",
    "Event",
    "Exchange",
    "Listening",
    "Mark",
    "RecordingCut",
    "SpeechCut",
    "TextDelta",
    "TurnFinished",
    "TurnOptions",
]
