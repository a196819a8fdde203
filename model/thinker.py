"""The Thinker: the GGUF language model, on llama-cpp-python's low-level API.

Besides text it keeps, for every position in its KV cache, the final (post-norm)
hidden state, which the Talker needs with the token's input embedding. The
context runs with `embeddings=True` and pooling off, so one decode gives both
logits and hidden states. Input can be token runs or embedding runs with
explicit M-RoPE positions (media). The KV cache is reused across calls: only
the part of a prompt after its common prefix with the cache is decoded.

Threads: a Thinker is used from one thread at a time; `cancel` (a
threading.Event) may be set from any thread and is checked between tokens.
"""

from __future__ import annotations

import codecs
import ctypes
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import llama_cpp
import numpy as np
import torch

from model.errors import ComputeError, ModelFileError, OmnideskError
from model.files.thinker_gguf import check_thinker_gguf
from model.hardware import default_threads
from model.llama_batch import LlamaBatch
from model.llama_kv_cache import set_kv_cache_type
from model.llama_logs import route_llama_logs
from model.sampling import NeverSample, NoStopBefore, Sampler, SamplingOptions
from model.thinker_types import (
    Decoded,
    Finished,
    PositionStates,
    Sampled,
    Segment,
    ThinkerEvent,
    ThinkerOptions,
    TokenRun,
)


class Thinker:
    def __init__(self, gguf_path: Path, tokens: dict[str, int], options: ThinkerOptions = ThinkerOptions()):
        info = check_thinker_gguf(gguf_path)
        n_ctx = options.context_for(info.n_ctx_train)
        self.options = options
        self.tokens = tokens
        self.n_embd = info.n_embd
        self.n_vocab = info.n_vocab
        self._embedding_rows = info.embedding_rows()
        self._stop_ids = {tokens["im_end"], tokens["endoftext"]}
        self._never = [tokens[role] for role in ("image", "video", "audio") if role in tokens]

        route_llama_logs()
        llama_cpp.llama_backend_init()
        model_params = llama_cpp.llama_model_default_params()
        gpu = llama_cpp.llama_supports_gpu_offload()
        model_params.n_gpu_layers = (999 if gpu else 0) if options.n_gpu_layers < 0 else options.n_gpu_layers
        self._model = llama_cpp.llama_model_load_from_file(str(gguf_path).encode(), model_params)
        if not self._model:
            raise _load_failure(gguf_path, model_params.n_gpu_layers)
        self._vocab = llama_cpp.llama_model_get_vocab(self._model)

        ctx_params = llama_cpp.llama_context_default_params()
        ctx_params.n_ctx = n_ctx
        ctx_params.n_batch = options.n_batch
        ctx_params.n_ubatch = options.n_batch
        ctx_params.n_seq_max = 1
        threads = options.n_threads or default_threads()
        ctx_params.n_threads = threads
        ctx_params.n_threads_batch = options.n_threads_batch or threads
        set_kv_cache_type(ctx_params, options.kv_cache_type)
        ctx_params.embeddings = True
        ctx_params.pooling_type = llama_cpp.LLAMA_POOLING_TYPE_NONE
        self._ctx = llama_cpp.llama_init_from_model(self._model, ctx_params)
        if not self._ctx:
            self.close()  # frees the model once (close() again, from __del__, finds nothing to free)
            raise OmnideskError(f"llama.cpp could not create a context of {n_ctx} tokens: try a smaller one")
        self.n_ctx = llama_cpp.llama_n_ctx(self._ctx)
        self.n_batch = llama_cpp.llama_n_batch(self._ctx)  # llama.cpp clamps it to the context

        # What the KV cache holds, per context index.
        self._keys: list[object] = []  # token id, or (run key, offset) for media
        self._token_ids = np.zeros(self.n_ctx, dtype=np.int64)
        self._is_media = np.zeros(self.n_ctx, dtype=bool)
        self._positions = np.zeros((3, self.n_ctx), dtype=np.int32)
        self._hidden = np.zeros((self.n_ctx, self.n_embd), dtype=np.float32)

    # -- tokens ---------------------------------------------------------------------------

    def tokenize(self, text: str, special: bool = False) -> list[int]:
        """Token ids of `text`; markers like <|im_start|> are parsed only if `special`."""
        data = text.encode("utf-8")
        capacity = len(data) + 8
        buffer = (llama_cpp.llama_token * capacity)()
        n = llama_cpp.llama_tokenize(self._vocab, data, len(data), buffer, capacity, False, special)
        if n < 0:
            raise RuntimeError(f"tokenize needed {-n} tokens, more than {capacity}")
        return list(buffer[:n])

    def token_bytes(self, token_id: int, special: bool = False) -> bytes:
        buffer = ctypes.create_string_buffer(64)
        n = llama_cpp.llama_token_to_piece(self._vocab, token_id, buffer, 64, 0, special)
        if n < 0:
            buffer = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(self._vocab, token_id, buffer, -n, 0, special)
        return buffer.raw[:n]

    def detokenize(self, ids: Sequence[int], special: bool = False) -> str:
        return b"".join(self.token_bytes(i, special) for i in ids).decode("utf-8", errors="replace")

    def input_embeddings(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """The token embedding rows (n, n_embd), float32, as llama.cpp reads them."""
        return self._embedding_rows(np.asarray(ids, dtype=np.int64))

    # -- context --------------------------------------------------------------------------

    @property
    def n_cached(self) -> int:
        return len(self._keys)

    @property
    def llama_model(self) -> ctypes.c_void_p:
        """llama.cpp's loaded model (what the vision encoder binds to)."""
        return self._model

    @property
    def next_position(self) -> int:
        """The position the next text token gets: one past the largest id so far."""
        return int(self._positions[:, : self.n_cached].max()) + 1 if self.n_cached else 0

    def states(self, start: int, stop: int) -> PositionStates:
        if not 0 <= start <= stop <= self.n_cached:
            raise IndexError(f"positions {start}..{stop} outside the {self.n_cached} cached")
        ids = self._token_ids[start:stop].copy()
        media = self._is_media[start:stop]
        embeddings = self.input_embeddings(np.where(media, 0, ids))
        embeddings[media] = 0.0
        return PositionStates(
            token_ids=ids,
            hidden=self._hidden[start:stop].copy(),
            embeddings=embeddings,
            positions=self._positions[:, start:stop].copy(),
            keys=tuple(self._keys[start:stop]),
        )

    def reset(self) -> None:
        """Forget the whole KV cache."""
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(self._ctx), True)
        self._keys.clear()

    def truncate(self, n_keep: int) -> None:
        """Keep only the first `n_keep` context positions (e.g. to roll back an interrupted reply)."""
        n_keep = self._valid_cut(min(n_keep, self.n_cached))
        if n_keep == self.n_cached:
            return
        if n_keep == 0:
            self.reset()
            return
        first_removed = int(self._positions[0, n_keep : self.n_cached].min())
        ok = llama_cpp.llama_memory_seq_rm(llama_cpp.llama_get_memory(self._ctx), 0, first_removed, -1)
        if not ok:
            self.reset()
            return
        del self._keys[n_keep:]

    def _valid_cut(self, n_keep: int) -> int:
        """Back off until every kept time position is below every removed one (removal is by position)."""
        times = self._positions[0, : self.n_cached]
        while 0 < n_keep < self.n_cached and times[:n_keep].max() >= times[n_keep:].min():
            n_keep -= 1
        return n_keep

    def prefill(self, prompt: Sequence[Segment], all_logits: bool = False) -> tuple[int, np.ndarray]:
        """Make the context hold exactly `prompt`, decoding only what the cache lacks.

        Returns (positions decoded, logits): logits (V,) of the last position, or
        (n_decoded, V) for every decoded position if `all_logits`.
        """
        keys, runs = _flatten(prompt)
        if not keys:
            raise OmnideskError("the prompt is empty")
        # Always decode the last prompt position again: its logits choose the first reply token.
        self.truncate(min(self._common_prefix(keys), len(keys) - 1))
        start = self.n_cached
        logits = self._decode_runs(runs, start, all_logits)
        return len(keys) - start, logits

    def extend(self, prompt: Sequence[Segment]) -> int:
        """Make the context hold `prompt`, the start of a prompt still being made (a question while it
        is asked), decoding only what the cache lacks; unlike `prefill`, nothing held is decoded again
        and no logits are made. Returns the positions decoded."""
        keys, runs = _flatten(prompt)
        self.truncate(self._common_prefix(keys))
        start = self.n_cached
        if start < len(keys):
            self._decode_runs(runs, start, all_logits=False)
        return len(keys) - start

    def _common_prefix(self, keys: list[object]) -> int:
        """How many of the prompt's first `keys` the cache holds (ContextFull if it cannot hold them all)."""
        if len(keys) > self.n_ctx:
            raise ContextFull(len(keys), self.n_ctx)
        common = 0
        for cached, new in zip(self._keys, keys, strict=False):
            if cached != new:
                break
            common += 1
        return common

    def _decode_runs(self, runs: list[tuple[int, Segment]], start: int, all_logits: bool) -> np.ndarray:
        """Decode the prompt's rows from `start` on (`runs`: each segment with its first row) in as few
        batches as `n_batch` allows; return the logits of every row decoded, or of the last."""
        pieces = _pieces(runs, start)
        positions = _positions(pieces, self.next_position)
        media = np.repeat(
            [not isinstance(s, TokenRun) for s, _, _ in pieces], [hi - lo for _, lo, hi in pieces]
        ).astype(bool)
        collected: list[np.ndarray] = []
        for lo, hi in _batch_bounds(positions[0], media, self.n_batch):
            logits = self._decode(_rows(pieces, lo, hi), positions[:, lo:hi], media[lo:hi])
            collected = [*collected, logits] if all_logits else [logits[-1:]]
        if not collected:
            raise RuntimeError("nothing was decoded")
        return np.concatenate(collected) if all_logits else collected[-1][0]

    def _decode(
        self, pieces: list[tuple[Segment, int, int]], positions: np.ndarray, media: np.ndarray
    ) -> np.ndarray:
        """Decode rows lo..hi of each segment of `pieces`, in order, at `positions` (3, n), as one batch
        at the end of the context (`media`: the rows that are media); return their logits.

        One batch costs far less than one per segment where the batches are small (a call's 2 s chunk:
        a few text tokens, a frame's embeddings and its sound's), since every batch reads all the
        weights. Text decoded beside media goes in as its token embedding rows, which is what
        llama.cpp reads for the tokens themselves."""
        index = self.n_cached
        n = positions.shape[1]
        if index + n > self.n_ctx:
            raise ContextFull(index + n, self.n_ctx)
        ids = np.empty(n, np.int64)
        embeddings = np.empty((n, self.n_embd), dtype=np.float32) if media.any() else None
        keys: list[object] = []
        row = 0
        for segment, lo, hi in pieces:
            rows = slice(row, row + hi - lo)
            if isinstance(segment, TokenRun):
                ids[rows] = segment.ids[lo:hi]
                keys += [int(i) for i in ids[rows]]
                if embeddings is not None:
                    embeddings[rows] = self.input_embeddings(ids[rows])
            else:
                if segment.embeddings.shape[1] != self.n_embd:
                    raise OmnideskError(
                        f"media embeddings have width {segment.embeddings.shape[1]}, the Thinker needs "
                        f"{self.n_embd}: the vision/audio encoder does not match this Thinker"
                    )
                placeholder = segment.placeholder
                ids[rows] = placeholder if isinstance(placeholder, int) else placeholder[lo:hi]
                keys += [(segment.key, i) for i in range(lo, hi)]
                assert embeddings is not None
                embeddings[rows] = segment.embeddings[lo:hi]
            row = rows.stop
        if embeddings is not None:
            pos4 = np.concatenate([positions, np.zeros((1, n), dtype=np.int32)]).reshape(-1)
            batch = LlamaBatch.embeddings(embeddings, pos4)
        else:
            batch = LlamaBatch.tokens(ids.astype(np.int32), positions[0].copy())
        status = llama_cpp.llama_decode(self._ctx, batch.struct)
        if status != 0:
            raise ComputeError(f"llama.cpp failed to decode a batch (status {status})")
        self._token_ids[index : index + n] = ids
        self._is_media[index : index + n] = media
        self._positions[:, index : index + n] = positions
        hidden = llama_cpp.llama_get_embeddings(self._ctx)
        self._hidden[index : index + n] = np.ctypeslib.as_array(hidden, shape=(n * self.n_embd,)).reshape(
            n, -1
        )
        self._keys.extend(keys)
        logits = llama_cpp.llama_get_logits(self._ctx)
        return np.ctypeslib.as_array(logits, shape=(n * self.n_vocab,)).reshape(n, -1).copy()

    # -- generation ----------------------------------------------------------------------

    def generate(
        self,
        prompt: Sequence[Segment],
        sampling: SamplingOptions = SamplingOptions(),
        max_tokens: int = 1024,
        cancel: threading.Event | None = None,
        min_tokens: int = 0,
    ) -> Iterator[ThinkerEvent]:
        """Decode a reply to `prompt`; the stop token itself is sampled but not decoded (as the reference).
        The first `min_tokens` tokens are never a stop token (generate's `min_new_tokens`)."""
        started = time.perf_counter()
        try:
            prompt_decoded, logits = self.prefill(prompt)
        except ContextFull:
            yield Finished("context_full", (), 0, None, None)
            return
        # Media placeholders are not text: a reply holding one would read as media in the next
        # prompt (ours and the reference's alike), so they are never sampled.
        sampler = Sampler(sampling, [NeverSample(self._never), NoStopBefore(self._stop_ids, min_tokens)])
        prompt_len = self.n_cached
        seen = torch.from_numpy(self._token_ids[:prompt_len][~self._is_media[:prompt_len]].copy())
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        reply: list[int] = []
        first_at: float | None = None
        reason = "length"
        while len(reply) < max_tokens:
            if cancel is not None and cancel.is_set():
                reason = "cancelled"
                break
            token = sampler(torch.from_numpy(logits), seen, generated=len(reply))
            first_at = first_at or time.perf_counter()
            reply.append(token)
            seen = torch.cat([seen, torch.tensor([token], dtype=seen.dtype)])
            stop = token in self._stop_ids
            yield Sampled(token, "" if stop else decoder.decode(self.token_bytes(token)))
            if stop:
                reason = "stop"
                break
            if len(reply) == max_tokens:
                break
            if self.n_cached >= self.n_ctx:
                reason = "context_full"
                break
            logits = self._decode_runs([(0, TokenRun((token,)))], 0, all_logits=False)
            index = self.n_cached - 1
            yield Decoded(token, index, self._hidden[index].copy(), self.input_embeddings([token])[0])
        tail = decoder.decode(b"", final=True)
        if tail:
            yield Sampled(-1, tail)
        elapsed = time.perf_counter() - (first_at or started)
        rate = (len(reply) - 1) / elapsed if first_at and len(reply) > 1 and elapsed > 0 else None
        yield Finished(reason, tuple(reply), prompt_decoded, (first_at - started) if first_at else None, rate)

    def close(self) -> None:
        if getattr(self, "_ctx", None):
            llama_cpp.llama_free(self._ctx)
            self._ctx = None
        if getattr(self, "_model", None):
            llama_cpp.llama_model_free(self._model)
            self._model = None

    def __enter__(self) -> Thinker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()


class ContextFull(OmnideskError):
    def __init__(self, needed: int, n_ctx: int) -> None:
        super().__init__(f"the conversation needs {needed} tokens but the context holds {n_ctx}")


def _flatten(prompt: Sequence[Segment]) -> tuple[list[object], list[tuple[int, Segment]]]:
    """Per-position keys of a prompt, and each segment with its start index."""
    keys: list[object] = []
    runs: list[tuple[int, Segment]] = []
    for segment in prompt:
        runs.append((len(keys), segment))
        if isinstance(segment, TokenRun):
            keys.extend(int(i) for i in segment.ids)
        else:
            keys.extend((segment.key, i) for i in range(len(segment.embeddings)))
    return keys, runs


def _pieces(runs: list[tuple[int, Segment]], start: int) -> list[tuple[Segment, int, int]]:
    """The prompt's rows from `start` on (`runs`: each segment with its first row) as (segment, lo, hi):
    a segment's rows lo..hi, in the prompt's order."""
    pieces = []
    for run_start, segment in runs:
        length = len(segment.ids) if isinstance(segment, TokenRun) else len(segment.embeddings)
        lo = max(start, run_start) - run_start
        if lo < length:
            pieces.append((segment, lo, length))
    return pieces


def _rows(pieces: list[tuple[Segment, int, int]], lo: int, hi: int) -> list[tuple[Segment, int, int]]:
    """Rows lo..hi of `pieces` (counted from their first), as pieces."""
    taken, row = [], 0
    for segment, first, last in pieces:
        begin, end = max(lo, row), min(hi, row + last - first)
        if begin < end:
            taken.append((segment, first + begin - row, first + end - row))
        row += last - first
    return taken


def _positions(pieces: list[tuple[Segment, int, int]], next_position: int) -> np.ndarray:
    """The (3, n) positions of `pieces`' rows: media and laid-out text at theirs, other text one after
    another from one past the largest so far (`next_position`, at the start)."""
    blocks = []
    for segment, lo, hi in pieces:
        if isinstance(segment, TokenRun):
            line = (
                np.arange(next_position, next_position + hi - lo)
                if segment.positions is None
                else np.asarray(segment.positions[lo:hi])
            )
            block = np.broadcast_to(line, (3, hi - lo))
        else:
            block = segment.positions[:, lo:hi]
        blocks.append(block)
        next_position = max(next_position, int(block.max()) + 1)
    return np.concatenate(blocks, axis=1).astype(np.int32) if blocks else np.zeros((3, 0), np.int32)


def _batch_bounds(times: np.ndarray, media: np.ndarray, n_batch: int) -> Iterator[tuple[int, int]]:
    """(lo, hi) of each batch of rows with time ids `times` (`media`: the rows that are media), at most
    `n_batch` rows. llama.cpp takes time ids that never decrease, within a batch and from one to the
    next, and a batch of text only if its ids all come after the cache's: rows of one time id (the two
    end markers of a video with its sound) are cut apart only before a media row."""
    n = len(times)
    lo = 0
    while lo < n:
        hi = min(n, lo + n_batch)
        while lo < hi < n and not (times[hi - 1] < times[hi] or (times[hi - 1] == times[hi] and media[hi])):
            hi -= 1
        if hi == lo:  # no cut llama.cpp takes: it says so when it refuses this batch
            hi = min(n, lo + n_batch)
        yield lo, hi
        lo = hi


def _load_failure(gguf_path: Path, gpu_layers: int) -> OmnideskError:
    """Why llama.cpp could not load the GGUF: a GPU without room for its layers (the file loads on the
    CPU: nothing is wrong with it) or a damaged file."""
    if gpu_layers > 0:
        params = llama_cpp.llama_model_default_params()
        params.n_gpu_layers = 0
        model = llama_cpp.llama_model_load_from_file(str(gguf_path).encode(), params)
        if model:
            llama_cpp.llama_model_free(model)
            return OmnideskError(
                "the language model does not fit in the GPU's free memory: close programs that use the "
                "GPU, or lower the GPU layers in Settings (or --gpu-layers)"
            )
    return ModelFileError(
        gguf_path, "llama.cpp could not load this GGUF", "Download or convert the Thinker again"
    )
