"""The speech policy: the Thinker's states in, codec ids out, as the reference's `generate` chooses them.

Generation follows transformers' `Qwen2_5OmniForConditionalGeneration.generate` exactly:

    prompt  = [hidden+embedding of every prompt position (media embeddings zeroed),
               E_text(voice text-bos) + E_codec(pad), reply[0] + E_codec(bos)]
              (the codec terms: see SpeechOptions.prompt_codec_embeddings)
    step j  = E_codec(code j-1) + reply[j]; after the text: E_text(text-eos) once,
              then E_text(text-pad) for as long as it speaks

where `reply[k]` is hidden+embedding of the k-th reply token fed back through the
Thinker. The codec bos is never sampled, codec pad and eos stop, and the repetition
penalty sees the reference's prompt ids (mask at every prompt position, pad, bos).

Threads: a `Talker` is used from one thread at a time; iterating its `states` may block that
thread until the Thinker's next state arrives. `cancel` (a threading.Event) may be set from any
thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import cast

import numpy as np
import torch

from model.errors import OmnideskError
from model.files.bundle import Bundle
from model.float16 import check_finite
from model.sampling import NeverSample, NoStopBefore, Sampler, SamplingOptions
from model.talker.gguf_file import GGUF_WEIGHTS, GgufWeights
from model.talker.graph import static_step
from model.talker.llama_network import LlamaTalkerNetwork, load_llama_talker
from model.talker.network import TalkerConfig, TalkerModel, talker_positions
from model.talker.quantize import Weights
from model.talker.weights import load_talker
from model.thinker_types import Decoded, PositionStates

# The reference's talker sampling defaults (generate's talker_* arguments).
REFERENCE_SAMPLING = SamplingOptions(temperature=0.9, top_k=40, top_p=0.8, repetition_penalty=1.05)

TextEmbedder = Callable[[Sequence[int]], np.ndarray]  # Thinker token ids -> input embeddings (n, width)


@dataclass(frozen=True)
class SpeechIds:
    """The ids generation places: codec ids in the Talker's vocabulary, text ids in the Thinker's."""

    codec_bos: int
    codec_eos: int
    codec_pad: int
    codec_mask: int
    text_eos: int
    text_pad: int
    voices: dict[str, int] = field(repr=False)  # voice name -> its text-bos id
    embeddable: int  # codec ids below this are ones the DiT can embed (its num_embeds + 1)

    @classmethod
    def from_bundle(cls, bundle: Bundle) -> SpeechIds:
        dit = bundle.config.get("token2wav_config", {}).get("dit_config", {})
        return cls(
            codec_bos=bundle.codec["bos"],
            codec_eos=bundle.codec["eos"],
            codec_pad=bundle.codec["pad"],
            codec_mask=bundle.codec["mask"],
            text_eos=bundle.tokens["tts_text_eos"],
            text_pad=bundle.tokens["tts_text_pad"],
            voices=dict(bundle.voices),
            embeddable=int(dit.get("num_embeds", 8193)) + 1,
        )

    @property
    def stop(self) -> tuple[int, int]:
        """generate's talker eos ids: pad and eos."""
        return (self.codec_pad, self.codec_eos)

    def voice_bos(self, voice: str) -> int:
        if voice not in self.voices:
            known = ", ".join(sorted(self.voices)) or "none"
            raise OmnideskError(f"unknown voice {voice!r}: this model bundle has {known}")
        return self.voices[voice]


@dataclass(frozen=True)
class SpeechOptions:
    voice: str = "Chelsie"
    sampling: SamplingOptions = REFERENCE_SAMPLING
    max_codes: int = 4096  # generate's talker_max_new_tokens (a stop id counts)
    min_codes: int = 0  # generate's talker_min_new_tokens: no stop id before this many codes
    embeddable_only: bool = True  # never emit ids the DiT cannot embed (the reference may, then crashes)
    # Add E_codec(pad) and E_codec(bos) to the last two prompt rows, as the Talker was trained and as
    # transformers' Talker.forward does when it gets an attention mask. transformers 5's generate drops an
    # all-ones mask before the forward, so its talker skips them: False reproduces that.
    prompt_codec_embeddings: bool = True


@dataclass(frozen=True)
class TalkerStep:
    code: int
    stop: bool  # a stop id (codec pad or eos): not a code to speak
    logits: torch.Tensor = field(repr=False)  # (vocab,) float32, the network's, before any sampling rule


class Talker:
    """Generates codec ids from the Thinker's states; see `speak`."""

    def __init__(
        self,
        model: TalkerModel | LlamaTalkerNetwork,
        ids: SpeechIds,
        embed_text: TextEmbedder,
        max_positions: int = 8192,
        compile: bool = False,
    ) -> None:
        """`embed_text` gives Thinker input embeddings (the voices' text-bos, text-eos and text-pad rows).

        With `compile`, the one-token step runs at static shapes (`graph.StaticStep`: attending over a
        fixed span of the cache, masked), captured as CUDA graphs on CUDA and compiled elsewhere;
        otherwise it runs eagerly over the filled slots only.
        """
        self.model = model
        self.ids = ids
        self.max_positions = max_positions
        model.setup_caches(max_positions)
        self.device = model.embed.weight.device
        self.dtype = model.embed.weight.dtype
        special = [ids.text_eos, ids.text_pad, *ids.voices.values()]
        rows = torch.from_numpy(np.asarray(embed_text(special), dtype=np.float32))
        self._text_rows = dict(zip(special, rows, strict=True))
        self._prompt_keys: tuple[object, ...] = ()  # what the cache's first slots hold (see `prime`)
        graphs = self.device.type == "cuda"
        self._static_step = None
        if compile and isinstance(model, TalkerModel):  # llama.cpp's decoder needs no compiling
            self._static_step = static_step(model, max_positions, graphs)

    @classmethod
    def load(
        cls,
        bundle: Bundle,
        embed_text: TextEmbedder,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        max_positions: int = 8192,
        compile: bool = False,
        weights: Weights | GgufWeights | None = None,
        prompt_copy: bool = False,
    ) -> Talker:
        """`weights`: weight-only quantization in torch ("int8", "int4"; talker/quantize.py), or the
        decoder in llama.cpp on the CPU ("iq4_nl", or "f32" as the checkpoint has it;
        talker/llama_network.py); `prompt_copy`: torch's quantized layers also keep a bfloat16 copy,
        which decodes the prompt several times faster."""
        config = TalkerConfig.from_dict(bundle.config["talker_config"])
        model: TalkerModel | LlamaTalkerNetwork
        if weights in GGUF_WEIGHTS:
            if torch.device(device).type != "cpu":
                raise ValueError(f"the Talker's llama.cpp decoder runs on the CPU, not on {device}")
            model = load_llama_talker(bundle, config, cast(GgufWeights, weights))
        else:
            model = load_talker(
                bundle.file("talker"), config, device, dtype, cast(Weights | None, weights), prompt_copy
            )
        return cls(model, SpeechIds.from_bundle(bundle), embed_text, max_positions, compile)

    def speak(
        self,
        states: Iterable[PositionStates | Decoded],
        options: SpeechOptions = SpeechOptions(),
        cancel: threading.Event | None = None,
    ) -> Iterator[int]:
        """Yield codec ids as the reference's talker `generate` chooses them, up to a stop id (excluded).

        `states`: the prompt's `PositionStates` first, then the reply tokens' `Decoded` states as
        the Thinker feeds them back (its final token, never fed back, is not among them); the end
        of the iterable is the end of the text. A step waits only for the reply state it needs.
        """
        for step in self.steps(states, options, cancel):
            if step.stop:
                return
            yield step.code

    @torch.inference_mode()
    def steps(
        self,
        states: Iterable[PositionStates | Decoded],
        options: SpeechOptions = SpeechOptions(),
        cancel: threading.Event | None = None,
    ) -> Iterator[TalkerStep]:
        """As `speak`, with each step's logits; the last step is the stop id's, if one was chosen."""
        ids = self.ids
        bos_row = self._text_rows[ids.voice_bos(options.voice)]
        stream = iter(states)
        prompt = next(stream, None)
        if prompt is None:
            return  # the feed ended (or was cancelled) before the Thinker reached its reply
        if not isinstance(prompt, PositionStates):
            raise TypeError("speak needs the prompt's PositionStates first")
        length = len(prompt.token_ids)
        if length + 1 + options.max_codes > self.max_positions:
            raise OmnideskError(
                f"the Talker holds {self.max_positions} positions, too few for a prompt of {length} "
                f"and {options.max_codes} codes: give it more positions or allow fewer codes"
            )
        self.prime(prompt)  # now, while the Thinker samples its first reply token
        first = next(stream, None)
        if first is None or _cancelled(cancel):
            return  # no reply text was fed back: nothing to say
        if not isinstance(first, Decoded):
            raise TypeError("after the prompt, speak takes only Decoded reply states")

        x = torch.stack([bos_row, _row(first.hidden, first.embedding)]).to(self.device, self.dtype)
        if options.prompt_codec_embeddings:
            x[-2] += self.model.embed.weight[ids.codec_pad]
            x[-1] += self.model.embed.weight[ids.codec_bos]
        positions = talker_positions(prompt.positions, length + 2).to(self.device)
        slots = torch.arange(length, length + 2, device=self.device)
        logits = self.model(x, slots, positions[:, length:], length + 2)[-1]

        sampler = Sampler(options.sampling, self._rules(options))
        seen = [ids.codec_mask] * length + [ids.codec_pad, ids.codec_bos]
        text = _ReplyText(stream, self._text_rows[ids.text_eos], self._text_rows[ids.text_pad])
        next_slot, next_position = length + 2, int(positions.max()) + 1
        for count in range(1, options.max_codes + 1):
            logits = logits.cpu()
            check_finite(logits, "the Talker", self.dtype)
            code = sampler(logits, torch.tensor(seen), generated=count - 1)
            stop = code in ids.stop
            yield TalkerStep(code, stop, logits)
            if stop or count == options.max_codes:
                return
            row = text.next()
            if _cancelled(cancel):
                return
            seen.append(code)
            logits = self._decode(code, row, next_slot, next_position)[0]
            next_slot += 1
            next_position += 1

    @torch.inference_mode()
    def prime(self, prompt: PositionStates) -> None:
        """Decode `prompt`'s positions into the cache (those it does not hold yet), so that a prompt
        that starts with them (as every turn starts with the system prompt) decodes only what follows.
        `speak` primes its prompt as soon as it has it, before the Thinker's first reply token."""
        kept = self._kept(prompt)
        length = len(prompt.token_ids)
        if kept < length:
            rows = _row(prompt.hidden[kept:], prompt.embeddings[kept:]).to(self.device, self.dtype)
            positions = talker_positions(prompt.positions, length).to(self.device)
            slots = torch.arange(kept, length, device=self.device)
            self.model(rows, slots, positions[:, kept:], length)
        self._prompt_keys = prompt.keys

    def _kept(self, prompt: PositionStates) -> int:
        """How many of `prompt`'s first positions the cache already holds (the rest is decoded).

        Positions with the same keys (token ids, media runs) in the same order hold the Thinker's
        same states at the same positions, so their keys and values are what decoding them again
        would compute. From here on the cache holds only those, until the prompt is decoded.
        """
        kept = 0
        for cached, new in zip(self._prompt_keys, prompt.keys, strict=False):
            if cached != new:
                break
            kept += 1
        self._prompt_keys = self._prompt_keys[:kept]
        return kept

    def _decode(self, code: int, row: torch.Tensor, slot: int, position: int) -> torch.Tensor:
        """One step: codec `code` plus the Thinker's `row` (embedding_size,) float32, at cache `slot`
        -> logits (1, vocab)."""
        if self._static_step is not None:
            return self._static_step(code, row, slot, position)
        x = (self.model.embed.weight[code] + row.to(self.device, self.dtype))[None]
        slots = torch.tensor([slot], device=self.device)
        positions = torch.full((3, 1), position, device=self.device)
        return self.model(x, slots, positions, slot + 1)

    def _rules(self, options: SpeechOptions) -> list[NeverSample | NoStopBefore]:
        """The reference's: the codec bos is never sampled, no stop before `min_codes`; and, unless
        told otherwise, never an id the DiT cannot embed."""
        ids = self.ids
        never = [ids.codec_bos]
        if options.embeddable_only:
            never += [i for i in range(ids.embeddable, self.model.config.vocab_size) if i not in ids.stop]
        return [NeverSample(never), NoStopBefore(ids.stop, options.min_codes)]


class _ReplyText:
    """The text part of each decode step: reply[1], reply[2], ..., then text-eos once, then text-pad."""

    def __init__(
        self, stream: Iterator[PositionStates | Decoded], eos: torch.Tensor, pad: torch.Tensor
    ) -> None:
        self._stream: Iterator[PositionStates | Decoded] | None = stream
        self._eos, self._pad = eos, pad

    def next(self) -> torch.Tensor:
        """(width,) float32; blocks until the next reply state or the end of the text is known."""
        if self._stream is None:
            return self._pad
        state = next(self._stream, None)
        if state is None:
            self._stream = None
            return self._eos
        if not isinstance(state, Decoded):
            raise TypeError("after the prompt, speak takes only Decoded reply states")
        return _row(state.hidden, state.embedding)


def _row(hidden: np.ndarray, embedding: np.ndarray) -> torch.Tensor:
    """What the Talker reads at a Thinker position: hidden state + input embedding, float32 (..., width)."""
    return torch.from_numpy(np.asarray(hidden, dtype=np.float32) + np.asarray(embedding, dtype=np.float32))


def _cancelled(cancel: threading.Event | None) -> bool:
    return cancel is not None and cancel.is_set()
