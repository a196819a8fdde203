"""The Talker: Thinker states in, speech codec ids out, in plain PyTorch.

Qwen2.5-Omni's Talker is a Qwen2-style decoder (GQA, SwiGLU, 3-section M-RoPE)
that reads, per position, the Thinker's final hidden state plus its input
embedding (both in the Thinker's width, projected down by `proj`) and writes one
codec id per step. Generation follows transformers'
`Qwen2_5OmniForConditionalGeneration.generate` exactly:

    prompt  = [hidden+embedding of every prompt position (media embeddings zeroed),
               E_text(voice text-bos) + E_codec(pad), reply[0] + E_codec(bos)]
              (the codec terms: see SpeechOptions.prompt_codec_embeddings)
    step j  = E_codec(code j-1) + reply[j]; after the text: E_text(text-eos) once,
              then E_text(text-pad) for as long as it speaks

where `reply[k]` is hidden+embedding of the k-th reply token fed back through the
Thinker. The codec bos is suppressed, codec pad and eos stop, and the repetition
penalty sees the reference's prompt ids (mask at every prompt position, pad, bos).

Threads: a `Talker` is used from one thread at a time. `ThinkerFeed.put`/`close`
are called from the Thinker's thread and never block; iterating the feed (inside
`Talker.speak`) blocks the Talker's thread until a state arrives. `cancel` (a
threading.Event) may be set from any thread.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from torch import nn

from model.errors import ModelFileError, OmnideskError
from model.files.bundle import Bundle
from model.sampling import Sampler, SamplingOptions
from model.thinker import Decoded, PositionStates

# The reference's talker sampling defaults (generate's talker_* arguments).
REFERENCE_SAMPLING = SamplingOptions(temperature=0.9, top_k=40, top_p=0.8, repetition_penalty=1.05)

TextEmbedder = Callable[[Sequence[int]], np.ndarray]  # Thinker token ids -> input embeddings (n, width)

_REBUILD = "Build the bundle again (omnidesk models convert) from the original checkpoint"


@dataclass(frozen=True)
class TalkerConfig:
    embedding_size: int = 3584  # the Thinker's width
    hidden_size: int = 896
    intermediate_size: int = 18944
    n_layers: int = 24
    n_heads: int = 12
    n_kv_heads: int = 4
    head_dim: int = 128
    vocab_size: int = 8448
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1e6
    mrope_section: tuple[int, int, int] = (16, 24, 24)  # rotary frequency pairs on time, height, width

    @classmethod
    def from_checkpoint(cls, talker_config: dict[str, Any]) -> TalkerConfig:
        """From the checkpoint's `talker_config`; missing fields take transformers' defaults."""
        c = talker_config
        rope = c.get("rope_parameters") or {}
        legacy = c.get("rope_scaling") or {}  # configs written by transformers 4.x
        section = rope.get("mrope_section") or legacy.get("mrope_section") or [16, 24, 24]
        return cls(
            embedding_size=int(c.get("embedding_size", 3584)),
            hidden_size=int(c.get("hidden_size", 3584)),
            intermediate_size=int(c.get("intermediate_size", 18944)),
            n_layers=int(c.get("num_hidden_layers", 28)),
            n_heads=int(c.get("num_attention_heads", 28)),
            n_kv_heads=int(c.get("num_key_value_heads", 4)),
            head_dim=int(c.get("head_dim") or 128),
            vocab_size=int(c.get("vocab_size", 8448)),
            rms_norm_eps=float(c.get("rms_norm_eps", 1e-6)),
            rope_theta=float(rope.get("rope_theta", c.get("rope_theta", 1e6))),
            mrope_section=(int(section[0]), int(section[1]), int(section[2])),
        )


# -- the network, outside in ----------------------------------------------------------------


class TalkerModel(nn.Module):
    """Thinker-width inputs (T, embedding_size) at cache slots `index` -> codec logits (T, vocab), float32."""

    inv_freq: torch.Tensor  # (head_dim/2,) float32
    rope_axis: torch.Tensor  # (head_dim/2,) which position (0 time, 1 height, 2 width) turns each pair

    def __init__(self, config: TalkerConfig) -> None:
        super().__init__()
        self.config = config
        self.proj = nn.Linear(config.embedding_size, config.hidden_size)
        # Codec ids, embedded in the Thinker's width.
        self.embed = nn.Embedding(config.vocab_size, config.embedding_size)
        self.layers = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.max_positions = 0

    def setup_caches(self, max_positions: int) -> None:
        """Allocate the KV cache (once) and the rotary tables on the weights' device and dtype."""
        param = self.embed.weight  # never quantized
        c = self.config
        self.max_positions = max_positions
        for layer in cast(Iterable[Block], self.layers):
            layer.attention.cache = KVCache(
                c.n_kv_heads, max_positions, c.head_dim, param.device, param.dtype
            )
        half = c.head_dim // 2
        if sum(c.mrope_section) != half:
            raise ValueError(f"mrope_section {c.mrope_section} must add up to head_dim/2 = {half}")
        self.register_buffer(
            "inv_freq", rope_frequencies(c.head_dim, c.rope_theta).to(param.device), persistent=False
        )
        axis = torch.repeat_interleave(torch.arange(3), torch.tensor(c.mrope_section))
        self.register_buffer("rope_axis", axis.to(param.device), persistent=False)

    def forward(
        self, x: torch.Tensor, index: torch.Tensor, positions: torch.Tensor, span: int
    ) -> torch.Tensor:
        """x: (T, embedding_size); index: (T,) cache slots; positions: (3, T) M-RoPE ids.

        Attention sees cache slots [0, span) up to each query's own slot; span must cover them all.
        """
        cos, sin = rope_cos_sin(positions, self.inv_freq, self.rope_axis, x.dtype)
        mask = torch.arange(span, device=x.device)[None, :] <= index[:, None]  # (T, span)
        h = self.proj(x)
        for layer in self.layers:
            h = layer(h, cos, sin, index, mask)
        return self.head(self.norm(h)).float()


class Block(nn.Module):
    def __init__(self, config: TalkerConfig) -> None:
        super().__init__()
        self.attention_norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.attention = Attention(config)
        self.mlp_norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = FeedForward(config)

    def forward(
        self, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, index: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        h = h + self.attention(self.attention_norm(h), cos, sin, index, mask)
        return h + self.mlp(self.mlp_norm(h))


class Attention(nn.Module):
    cache: KVCache

    def __init__(self, config: TalkerConfig) -> None:
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = config.n_heads, config.n_kv_heads, config.head_dim
        self.q = nn.Linear(config.hidden_size, config.n_heads * config.head_dim)
        self.k = nn.Linear(config.hidden_size, config.n_kv_heads * config.head_dim)
        self.v = nn.Linear(config.hidden_size, config.n_kv_heads * config.head_dim)
        self.o = nn.Linear(config.n_heads * config.head_dim, config.hidden_size, bias=False)

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, index: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """x: (T, hidden); cos, sin: (T, head_dim); index: (T,); mask: (T, span) -> (T, hidden)."""
        n = x.shape[0]
        q = self.q(x).view(n, self.n_heads, self.head_dim).transpose(0, 1)
        k = self.k(x).view(n, self.n_kv_heads, self.head_dim).transpose(0, 1)
        v = self.v(x).view(n, self.n_kv_heads, self.head_dim).transpose(0, 1)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        keys, values = self.cache.update(index, k, v, mask.shape[1])
        y = F.scaled_dot_product_attention(q[None], keys[None], values[None], attn_mask=mask, enable_gqa=True)
        return self.o(y[0].transpose(0, 1).reshape(n, -1))


class KVCache(nn.Module):
    """Keys and values (n_kv_heads, max_positions, head_dim), written in place at the given slots."""

    k: torch.Tensor
    v: torch.Tensor

    def __init__(
        self, n_kv_heads: int, max_positions: int, head_dim: int, device: torch.device, dtype: torch.dtype
    ):
        super().__init__()
        shape = (n_kv_heads, max_positions, head_dim)
        self.register_buffer("k", torch.zeros(shape, device=device, dtype=dtype), persistent=False)
        self.register_buffer("v", torch.zeros(shape, device=device, dtype=dtype), persistent=False)

    def update(
        self, index: torch.Tensor, k: torch.Tensor, v: torch.Tensor, span: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """k, v: (n_kv_heads, T, head_dim) for slots `index` (T,) -> keys and values of slots [0, span)."""
        self.k.index_copy_(1, index, k)
        self.v.index_copy_(1, index, v)
        return self.k[:, :span], self.v[:, :span]


class FeedForward(nn.Module):
    def __init__(self, config: TalkerConfig) -> None:
        super().__init__()
        self.gate = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.silu(self.gate(x)) * self.up(x))


class RMSNorm(nn.Module):
    """As Qwen2's: normalised in float32, cast back, then scaled."""

    def __init__(self, size: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)


class Int8Linear(nn.Module):
    """A weight-only int8 linear layer: int8 weight (out, in) with one float32 scale per output row.

    On the CPU a few rows (decode) go through torch's int8 kernel, which is fast with bfloat16
    activations; more rows (prefill) and other devices use the dequantized weight.
    """

    weight: torch.Tensor
    scales: torch.Tensor
    scales_bf16: torch.Tensor

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        weight = linear.weight.detach().float()
        scales = weight.abs().amax(dim=1).clamp(min=1e-12) / 127.0
        quantized = torch.round(weight / scales[:, None]).clamp(-127, 127).to(torch.int8)
        self.register_buffer("weight", quantized)
        self.register_buffer("scales", scales)
        self.register_buffer("scales_bf16", scales.to(torch.bfloat16))
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        if flat.device.type == "cpu" and flat.shape[0] <= 4:
            y = torch._weight_int8pack_mm(flat.to(torch.bfloat16), self.weight, self.scales_bf16).to(x.dtype)
        else:
            y = F.linear(flat, self.weight.to(flat.dtype)) * self.scales.to(flat.dtype)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], -1)


def quantize_int8(model: TalkerModel) -> TalkerModel:
    """Replace every linear layer (not the codec embedding) by its weight-only int8 version, in place."""
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.Linear):
                setattr(module, name, Int8Linear(child))
    return model


# -- small pure functions --------------------------------------------------------------------


def rope_frequencies(head_dim: int, theta: float) -> torch.Tensor:
    """Inverse frequencies (head_dim/2,), float32, computed as transformers does."""
    return 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float) / head_dim))


def rope_cos_sin(
    positions: torch.Tensor, inv_freq: torch.Tensor, axis: torch.Tensor, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """M-RoPE tables (T, head_dim): frequency pair i turns with the position of axis[i] (time, height, width).

    positions: (3, T); inv_freq, axis: (head_dim/2,). Computed in float32, then cast to `dtype`.
    """
    angles = positions[axis].T.float() * inv_freq  # (T, head_dim/2)
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: (heads, T, head_dim), rotated by half-split pairs."""
    first, second = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-second, first], dim=-1) * sin


def talker_positions(prompt_positions: np.ndarray, length: int) -> torch.Tensor:
    """M-RoPE ids (3, length) of the Talker's positions, the prompt's first.

    prompt_positions: (3, L), the Thinker's positions of its prompt. The reference
    computes the Talker's positions with its `get_rope_index` over the Thinker's
    prompt ids; for text (and audio, whose ids are sequential) that is
    0..L-1 on all three axes, exactly what the Thinker gives. Everything after the
    prompt (voice text-bos, the reply) is text: the same id on all three axes,
    counting on from one past the prompt's largest id. Media prompts (images,
    video, audio in video) pass their own 3-D ids through here once the
    perception issue makes the Thinker compute them as the reference does.
    """
    prompt = torch.as_tensor(np.asarray(prompt_positions, dtype=np.int64))
    start = int(prompt.max()) + 1 if prompt.numel() else 0
    text = torch.arange(start, start + length - prompt.shape[1]).expand(3, -1)
    return torch.cat([prompt, text], dim=1)


# -- weights ---------------------------------------------------------------------------------

# Our module names -> the checkpoint's (under "talker."), outside the per-layer part.
_TOP_NAMES = {
    "proj": "thinker_to_talker_proj",
    "embed": "model.embed_tokens",
    "norm": "model.norm",
    "head": "codec_head",
}
_LAYER_NAMES = {
    "attention_norm": "input_layernorm",
    "attention.q": "self_attn.q_proj",
    "attention.k": "self_attn.k_proj",
    "attention.v": "self_attn.v_proj",
    "attention.o": "self_attn.o_proj",
    "mlp_norm": "post_attention_layernorm",
    "mlp.gate": "mlp.gate_proj",
    "mlp.up": "mlp.up_proj",
    "mlp.down": "mlp.down_proj",
}


def checkpoint_name(name: str) -> str:
    """Our parameter name -> its name in the checkpoint, e.g. layers.3.attention.q.weight ->
    talker.model.layers.3.self_attn.q_proj.weight."""
    module, leaf = name.rsplit(".", 1)
    if module.startswith("layers."):
        _, number, rest = module.split(".", 2)
        return f"talker.model.layers.{number}.{_LAYER_NAMES[rest]}.{leaf}"
    return f"talker.{_TOP_NAMES[module]}.{leaf}"


def load_talker(
    path: Path, config: TalkerConfig, device: str | torch.device, dtype: torch.dtype
) -> TalkerModel:
    """Build the network from `talker.safetensors` (checkpoint names), checking it against `config`."""
    try:
        with safe_open(str(path), framework="pt", device="cpu") as file:
            tensors = {name: file.get_tensor(name) for name in file.keys()}  # noqa: SIM118 (not a dict)
    except (OSError, SafetensorError) as exc:
        raise ModelFileError(path, f"unreadable talker file ({exc})", _REBUILD) from None
    return talker_from_tensors(tensors, config, device, dtype, source=path)


def talker_from_tensors(
    tensors: dict[str, torch.Tensor],
    config: TalkerConfig,
    device: str | torch.device,
    dtype: torch.dtype,
    source: Path | str = "talker.safetensors",
) -> TalkerModel:
    """Build the network from tensors under the checkpoint's names (talker.*), checking every name and shape.

    Tensors already on `device` in `dtype` are used as they are, not copied.
    """
    with torch.device("meta"):
        model = TalkerModel(config)
    expected = {checkpoint_name(name): (name, tuple(p.shape)) for name, p in model.state_dict().items()}
    missing = sorted(set(expected) - set(tensors))
    if missing:
        raise ModelFileError(source, f"tensor {missing[0]} is missing ({len(missing)} in all)", _REBUILD)
    unexpected = sorted(set(tensors) - set(expected))
    if unexpected:
        raise ModelFileError(
            source,
            f"unexpected tensor {unexpected[0]} for this talker config ({len(unexpected)} in all)",
            _REBUILD,
        )
    state = {}
    for key, (name, shape) in expected.items():
        if tuple(tensors[key].shape) != shape:
            raise ModelFileError(
                source,
                f"tensor {key} has shape {tuple(tensors[key].shape)} "
                f"but the manifest's talker config needs {shape}",
                "The talker file and the bundle manifest come from different checkpoints; " + _REBUILD,
            )
        state[name] = tensors[key].to(device=device, dtype=dtype)
    model.load_state_dict(state, assign=True)
    return model.eval()


# -- generation ------------------------------------------------------------------------------


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
        model: TalkerModel,
        ids: SpeechIds,
        embed_text: TextEmbedder,
        max_positions: int = 8192,
        compile: bool = False,
    ) -> None:
        """`embed_text` gives Thinker input embeddings (the voices' text-bos, text-eos and text-pad rows).

        With `compile`, the one-token step is compiled for static shapes (attending over the whole
        cache, masked), with CUDA graphs on CUDA; otherwise it runs eagerly over the filled slots only.
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
        self._step: Callable[..., torch.Tensor] = model
        self._static = compile
        if compile:
            mode = "reduce-overhead" if self.device.type == "cuda" else "default"
            self._step = torch.compile(model, mode=mode, fullgraph=True, dynamic=False)

    @classmethod
    def load(
        cls,
        bundle: Bundle,
        embed_text: TextEmbedder,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        max_positions: int = 8192,
        compile: bool = False,
        int8: bool = False,
    ) -> Talker:
        config = TalkerConfig.from_checkpoint(bundle.config["talker_config"])
        model = load_talker(bundle.file("talker"), config, device, dtype)
        if int8:
            quantize_int8(model)
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
        if not isinstance(prompt, PositionStates):
            raise TypeError("speak needs the prompt's PositionStates first")
        length = len(prompt.token_ids)
        if length + 1 + options.max_codes > self.max_positions:
            raise OmnideskError(
                f"the Talker holds {self.max_positions} positions, too few for a prompt of {length} "
                f"and {options.max_codes} codes: give it more positions or allow fewer codes"
            )
        first = next(stream, None)
        if first is None or _cancelled(cancel):
            return  # no reply text was fed back: nothing to say
        if not isinstance(first, Decoded):
            raise TypeError("after the prompt, speak takes only Decoded reply states")

        x = torch.cat(
            [_row(prompt.hidden, prompt.embeddings), bos_row[None], _row(first.hidden, first.embedding)[None]]
        )
        x = x.to(self.device, self.dtype)
        if options.prompt_codec_embeddings:
            x[-2] += self.model.embed.weight[ids.codec_pad]
            x[-1] += self.model.embed.weight[ids.codec_bos]
        positions = talker_positions(prompt.positions, length + 2).to(self.device)
        slots = torch.arange(length + 2, device=self.device)
        logits = self.model(x, slots, positions, length + 2)[-1]

        sampler = Sampler(options.sampling, suppress=self._suppressed(options))
        seen = [ids.codec_mask] * length + [ids.codec_pad, ids.codec_bos]
        text = _ReplyText(stream, self._text_rows[ids.text_eos], self._text_rows[ids.text_pad])
        next_slot, next_position = length + 2, int(positions.max()) + 1
        stop_ids = torch.tensor(ids.stop)
        for count in range(1, options.max_codes + 1):
            logits = logits.cpu()
            scores = logits
            if count <= options.min_codes:
                scores = logits.index_fill(0, stop_ids, float("-inf"))
            code = sampler(scores, torch.tensor(seen))
            stop = code in ids.stop
            yield TalkerStep(code, stop, logits)
            if stop or count == options.max_codes:
                return
            row = text.next()
            if _cancelled(cancel):
                return
            seen.append(code)
            x = (self.model.embed.weight[code] + row.to(self.device, self.dtype))[None]
            logits = self._decode(x, next_slot, next_position)[0]
            next_slot += 1
            next_position += 1

    def _decode(self, x: torch.Tensor, slot: int, position: int) -> torch.Tensor:
        """One step: x (1, embedding_size) at cache `slot` -> logits (1, vocab)."""
        slots = torch.tensor([slot], device=self.device)
        positions = torch.full((3, 1), position, device=self.device)
        span = self.max_positions if self._static else slot + 1
        return self._step(x, slots, positions, span)

    def _suppressed(self, options: SpeechOptions) -> list[int]:
        ids = self.ids
        suppressed = [ids.codec_bos]
        if options.embeddable_only:
            vocab = self.model.config.vocab_size
            suppressed += [
                i for i in range(ids.embeddable, vocab) if i not in ids.stop and i != ids.codec_bos
            ]
        return suppressed


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


class ThinkerFeed:
    """Carries the Thinker's states to a Talker on another thread, as `Talker.speak`'s `states`.

    The Thinker's thread calls `put` (the prompt's PositionStates first, then each Decoded) and
    `close` at the end of the text; neither blocks. The prompt's states are the whole context
    before the reply, `thinker.states(0, first.index)` for the first Decoded `first`, so the
    Talker starts once the Thinker has decoded its first reply token. Iterating (the Talker's
    thread) blocks on the queue without spinning, waking every `poll_s` only to notice `cancel`;
    it ends at `close` or when cancelled.
    """

    _END = object()

    def __init__(self, cancel: threading.Event | None = None, poll_s: float = 0.05) -> None:
        self._queue: queue.Queue[object] = queue.Queue()
        self._cancel = cancel
        self._poll_s = poll_s

    def put(self, state: PositionStates | Decoded) -> None:
        self._queue.put(state)

    def close(self) -> None:
        self._queue.put(self._END)

    def __iter__(self) -> Iterator[PositionStates | Decoded]:
        while not _cancelled(self._cancel):
            try:
                item = self._queue.get(timeout=self._poll_s)
            except queue.Empty:
                continue
            if item is self._END:
                return
            assert isinstance(item, PositionStates | Decoded)
            yield item


def _row(hidden: np.ndarray, embedding: np.ndarray) -> torch.Tensor:
    """What the Talker reads at a Thinker position: hidden state + input embedding, float32 (..., width)."""
    return torch.from_numpy(np.asarray(hidden, dtype=np.float32) + np.asarray(embedding, dtype=np.float32))


def _cancelled(cancel: threading.Event | None) -> bool:
    return cancel is not None and cancel.is_set()
