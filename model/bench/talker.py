"""`omnidesk bench talker`: our Talker against transformers' at the Qwen2.5-Omni-7B size, random weights.

Both run in this process on the same weights (ours aliases the reference's tensors where dtype and
device allow): a prompt of `--prompt` positions, then `--steps` decode steps, greedy. It prints ms
per code, the ratio, peak memory, this machine's weight-streaming bound (the time of one bare
matrix-vector product with each weight matrix of the step, measured before and after the runs)
with our decode step as a fraction of it, and the weight-only int8 and int4 (also with the
bfloat16 copy that decodes the prompt: talker/quantize.py) and the bfloat16 variants: their
speed, and at every one of their steps, fed the float32 run's codes (teacher forcing), the logit
error against float32 and whether their own greedy pick is float32's.

Times are wall-clock, `time.perf_counter`, after a device synchronisation. Peak memory is the peak
resident set (sampled every 5 ms from /proc/self/statm, Linux) above the level before each run, or
on CUDA the peak allocated by torch during it.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
import torch

from model.bench.parts.measure import DTYPES, median_seconds, peak_memory
from model.bench.parts.random_bundle import VOICE_BOS, talker_config
from model.bench.parts.talker_run import (
    CODEC,
    TEXT_EOS,
    TEXT_PAD,
    TalkerRun,
    TeacherForcing,
    bench_talker,
    run_talker,
    thinker_rows,
    thinker_states,
)
from model.talker import Talker
from model.talker.network import TalkerConfig, TalkerModel
from model.talker.quantize import Weights, quantize
from model.talker.weights import talker_from_tensors
from model.thinker_types import Decoded, PositionStates

TALKER_7B = {**talker_config("7b", 3584), "vocab_size": 8448}  # Qwen2.5-Omni-7B's, Thinker width 3584


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="omnidesk bench talker", description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda or mps (default: cpu)")
    parser.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    parser.add_argument("--prompt", type=int, default=200, help="prompt positions (default: 200)")
    parser.add_argument("--steps", type=int, default=100, help="decode steps measured (default: 100)")
    parser.add_argument(
        "--variant-steps", type=int, default=200, help="decode steps of int8/int4/bf16 (default: 200)"
    )
    parser.add_argument("--threads", type=int, help="torch's CPU threads (default: torch's)")
    parser.add_argument(
        "--compile", action="store_true", help="compile our decode step (CUDA graphs on CUDA)"
    )
    parser.add_argument("--no-reference", action="store_true", help="skip transformers' Talker")
    parser.add_argument("--no-quantized", action="store_true", help="skip the int8 and int4 variants")
    parser.add_argument("--no-bf16", action="store_true", help="skip the bfloat16 variant")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    torch.manual_seed(0)

    print(
        f"Talker at the Qwen2.5-Omni-7B size, random weights; device {_device_name(device)}, {args.dtype}, "
        f"{torch.get_num_threads()} threads; prompt {args.prompt}, {args.steps} decode steps, greedy"
    )
    started = time.perf_counter()
    reference = _reference_talker(device, dtype)
    print(f"built the reference in {time.perf_counter() - started:.1f} s")
    config = TalkerConfig.from_dict(TALKER_7B)
    tensors = {f"talker.{name}": t for name, t in reference.state_dict().items()}
    ours = talker_from_tensors(tensors, config, device, dtype)
    weight_bytes = _streamed_bytes(ours)
    parameters = sum(t.numel() for t in tensors.values())
    print(f"parameters {parameters / 1e9:.3f} B; weights read per decode step {weight_bytes / 1e9:.2f} GB")

    bounds = [_weight_streaming_seconds(ours, device)]
    rows = thinker_rows(config.embedding_size, args.prompt + args.steps + 2)
    states = thinker_states(rows, args.prompt)
    max_positions = args.prompt + max(args.steps, args.variant_steps) + 8
    talker = bench_talker(ours, rows, max_positions, args.compile)
    warm_up = thinker_states(rows, 8)[:4]
    run_talker(talker, warm_up, 3 if args.compile else 1, device)  # and compilation
    with TeacherForcing().standing_in():  # as run_talker does: the greedy pick (steps noted for variants)
        mine = run_talker(talker, states, max(args.steps, args.variant_steps), device)
    _report("ours", mine)
    if not args.no_reference:
        _run_reference(reference, rows, warm_up, 1, device)
        theirs = _run_reference(reference, rows, states, args.steps, device)
        _report("transformers", theirs)
        print(
            f"transformers/ours: prefill {theirs.prefill_s / mine.prefill_s:.2f}x, "
            f"decode {theirs.decode_s / mine.decode_s:.2f}x (above 1: ours is faster)"
        )
    del reference
    bounds.append(_weight_streaming_seconds(ours, device))
    bound_s = min(bounds)
    measured = " and ".join(f"{b * 1e3:.0f} ms ({weight_bytes / b / 1e9:.1f} GB/s)" for b in bounds)
    print(
        f"weight streaming: one bare matrix-vector product per weight matrix of the step, the same "
        f"{weight_bytes / 1e9:.2f} GB, takes {measured} (before, after); at the best, our decode step "
        f"reaches {bound_s / mine.decode_s:.0%} of that bound"
    )

    quantized: list[tuple[Weights, bool]] = (
        [] if args.no_quantized else [("int8", False), ("int4", False), ("int4", True)]
    )
    for weights, prompt_copy in quantized:
        model = quantize(talker_from_tensors(tensors, config, device, dtype), weights, prompt_copy)
        variant = bench_talker(model, rows, max_positions, False)
        name = f"weight-only {weights}" + (", bfloat16 copy for the prompt" if prompt_copy else "")
        _variant(name, variant, states, args.variant_steps, device, mine)
        del model, variant
    if not args.no_bf16 and dtype != torch.bfloat16:
        bf16 = talker_from_tensors(tensors, config, device, torch.bfloat16)
        variant = bench_talker(bf16, rows, max_positions, False)
        _variant("bfloat16", variant, states, args.variant_steps, device, mine)
    return 0


def _reference_talker(device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    from transformers import Qwen2_5OmniTalkerConfig, Qwen2_5OmniTalkerForConditionalGeneration

    settings: dict[str, Any] = dict(TALKER_7B)
    config = Qwen2_5OmniTalkerConfig(
        **settings,
        tts_codec_start_token_id=CODEC["bos"],
        tts_codec_end_token_id=CODEC["eos"],
        tts_codec_pad_token_id=CODEC["pad"],
        tts_codec_mask_token_id=CODEC["mask"],
        tts_text_end_token_id=TEXT_EOS,
        tts_text_pad_token_id=TEXT_PAD,
    )
    model: torch.nn.Module = Qwen2_5OmniTalkerForConditionalGeneration(config)
    return model.to(device=device, dtype=dtype).eval()


def _run_reference(
    reference: torch.nn.Module,
    rows: dict[int, np.ndarray],
    states: list[PositionStates | Decoded],
    steps: int,
    device: torch.device,
) -> TalkerRun:
    """transformers' talker.generate fed as Qwen2_5OmniForConditionalGeneration.generate feeds it."""
    prompt = states[0]
    assert isinstance(prompt, PositionStates)
    n = len(prompt.token_ids)
    dtype = next(reference.parameters()).dtype

    def tensor(array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.asarray(array, dtype=np.float32)).to(device, dtype)

    inputs = tensor(np.stack([*prompt.hidden, rows[VOICE_BOS], rows[n]]))[None]
    reply = tensor(
        np.stack([rows[i] for i in range(n + 1, n + steps + 1)] + [rows[TEXT_EOS], rows[TEXT_PAD]])
    )[None]
    input_ids = torch.tensor([[CODEC["mask"]] * n + [CODEC["pad"], CODEC["bos"]]], device=device)

    clock = _TokenClock()
    with peak_memory(device) as peak, torch.no_grad():
        started = time.perf_counter()
        reference.generate(  # type: ignore[operator]
            input_ids=input_ids,
            input_text_ids=input_ids,
            thinker_reply_part=reply,
            inputs_embeds=inputs,
            attention_mask=torch.ones_like(input_ids),
            suppress_tokens=[CODEC["bos"]],
            eos_token_id=[CODEC["pad"], CODEC["eos"]],
            pad_token_id=CODEC["pad"],
            do_sample=False,
            repetition_penalty=1.05,
            max_new_tokens=steps + 1,
            min_new_tokens=steps + 1,
            streamer=clock,
        )
    codes = clock.times[1:]  # the first call hands over the prompt
    if len(codes) != steps + 1:
        raise RuntimeError(f"the reference made {len(codes)} codes, not {steps + 1}")
    return TalkerRun(codes[0] - started, (codes[-1] - codes[0]) / steps, steps, peak[0], torch.empty(0), ())


class _TokenClock:
    """A transformers streamer that notes when generate hands over each token (time.perf_counter)."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def put(self, value: torch.Tensor) -> None:
        self.times.append(time.perf_counter())

    def end(self) -> None:
        pass


def _variant(
    name: str,
    talker: Talker,
    states: list[PositionStates | Decoded],
    steps: int,
    device: torch.device,
    base: TalkerRun,
) -> None:
    """`talker`'s speed, and each of its `steps` steps fed `base`'s codes: logit error, greedy agreement."""
    with TeacherForcing(list(base.code_ids)).standing_in() as forced:
        run = run_talker(talker, states, steps, device)
    compared = len(run.logits)
    error = (run.logits - base.logits[:compared]).abs().amax(dim=1)
    scale = base.logits[:compared].abs().max()
    agree = sum(a == b for a, b in zip(forced.picks, base.code_ids, strict=False))
    print(
        f"{name}: prefill {run.prefill_s * 1e3:.0f} ms, decode {run.decode_s * 1e3:.1f} ms/code "
        f"({base.decode_s / run.decode_s:.2f}x our float32), peak +{run.peak_bytes / 2**30:.2f} GiB; "
        f"over {compared} steps fed float32's codes: logits max abs error {error.max():.2e} "
        f"({error.max() / scale:.1%} of the largest logit, mean {error.mean() / scale:.1%}); "
        f"its greedy code is float32's at {agree}/{compared} steps"
    )


def _report(name: str, run: TalkerRun) -> None:
    print(
        f"{name}: prefill {run.prefill_s * 1e3:.0f} ms, "
        f"decode {run.decode_s * 1e3:.1f} ms/code over {run.codes} codes ({1 / run.decode_s:.1f} codes/s), "
        f"peak +{run.peak_bytes / 2**30:.2f} GiB above the weights and our KV cache"
    )


def _streamed_bytes(model: TalkerModel) -> int:
    """Bytes a decode step reads: every weight but the codec embedding table (one row of it)."""
    return sum(
        t.numel() * t.element_size() for name, t in model.state_dict().items() if not name.startswith("embed")
    )


def _weight_streaming_seconds(model: TalkerModel, device: torch.device, repeats: int = 7) -> float:
    """The bound of a decode step: the median time of one bare matrix-vector product with each of the
    step's weight matrices in turn (the same bytes, shapes and memory as the step reads), no other work."""
    matrices = [t for name, t in model.state_dict().items() if t.ndim == 2 and not name.startswith("embed")]
    vectors = {
        n: torch.randn(n, device=device, dtype=matrices[0].dtype) for n in {m.shape[1] for m in matrices}
    }

    def one_pass() -> None:
        for matrix in matrices:
            torch.mv(matrix, vectors[matrix.shape[1]])

    return median_seconds(one_pass, repeats, device)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return device.type
