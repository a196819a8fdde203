"""`omnidesk doctor`: where the model runs, the hardware, what can use it, and which model to choose."""

from __future__ import annotations

from app.remote.conversation import RemoteConversation
from model.errors import OmnideskError
from model.hardware import GIB, Hardware
from model.placement import MemoryNeeds, estimated_needs, make_plan
from model.sizing import SIZES, options, recommend
from model.thinker_types import DEFAULT_CONTEXT


def where_the_model_runs(server: str, api_key: str, folder: str) -> str:
    """The report's first line: the server the model runs on (asked for its model's name and voices),
    or this computer and its bundle (`folder`, "" for none yet)."""
    if not server:
        return f"Model:         this computer ({folder or 'no bundle chosen yet'})"
    try:
        remote = RemoteConversation(server, api_key or None)
    except OmnideskError as exc:
        return f"Model:         a server, but {exc}"
    try:
        voices = ", ".join(remote.voices) or "its default"
        return f"Model:         server {remote.base_url} ({remote.model}), voices: {voices}"
    except OmnideskError as exc:
        return f"Model:         server {remote.base_url}, not usable: {exc}"
    finally:
        remote.close()


def report(hardware: Hardware, bundle: tuple[str, MemoryNeeds] | None = None) -> str:
    """The machine, the sizes that fit it, and the plan for `bundle` (name, needs), or for the
    recommended size when there is none yet."""
    lines = [
        f"System:        {hardware.system}, {hardware.cpu_count} CPU threads",
        f"Memory:        {hardware.ram_total_bytes / GIB:.1f} GiB, "
        f"{hardware.ram_available_bytes / GIB:.1f} GiB free",
    ]
    if hardware.gpus:
        lines += [f"GPU:           {g.name} ({g.api}, {g.memory_bytes / GIB:.1f} GiB)" for g in hardware.gpus]
    else:
        lines.append("GPU:           none found")
    lines += [
        f"llama.cpp:     built for {hardware.llama_backend}",
        f"torch:         {hardware.torch_version}, computing on {hardware.torch_device}",
    ]
    lines += [f"Note:          {note}" for note in hardware.notes]
    lines += [
        "",
        f"Estimated memory ({DEFAULT_CONTEXT}-token context):",
        "  size  quant    GGUF      on GPU    on CPU",
    ]
    for option in options(hardware):
        gpu = f"{option.gpu_bytes / GIB:5.1f} GiB{'*' if option.fits_gpu else ' '}"
        cpu = f"{option.cpu_bytes / GIB:5.1f} GiB{'*' if option.fits_ram else ' '}"
        lines.append(f"  {option.size:4}  {option.quant:7}  {option.gguf_bytes / GIB:4.1f} GiB  {gpu}  {cpu}")
    lines.append("  (* fits)")
    advice = recommend(hardware)
    choice = f"{advice.option.size.upper()} {advice.option.quant}" if advice.option else "none"
    lines += ["", f"Recommended:   {choice}", f"Why:           {advice.reason}"]
    if bundle is None and advice.option is not None:
        bundle = (choice, estimated_needs(SIZES[advice.option.size], advice.option.quant))
    if bundle is not None:
        name, needs = bundle
        plan = make_plan(hardware, needs)
        lines += ["", f"How {name} would run here:"]
        lines += [f"  {line}" for line in plan.describe()]
        lines += [f"  Note: {note}" for note in plan.notes]
    return "\n".join(lines)
