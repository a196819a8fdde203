"""The vision tower as llama.cpp's multimodal projector GGUF (an "mmproj"), written from a checkpoint.

Layout: what llama.cpp's own converter writes for Qwen2.5-Omni's vision part (architecture "clip",
projector type "qwen2.5o", which clip.cpp runs as Qwen2.5-VL's ViT: window attention every
`n_wa_pattern` blocks but the last of each group, SiLU-gated MLPs, RMSNorm, 2x2 merge). The
checkpoint's 3-D patch convolution (2 frames x 14 x 14) becomes two 2-D kernels, one per frame.
The audio tower is not written: Omnidesk runs the model's own audio encoder natively.

Preprocessing constants are the reference processor's (OpenAI CLIP mean and std).
"""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import torch

from model.files.checkpoint import Checkpoint

IMAGE_MEAN = (0.48145466, 0.4578275, 0.40821073)
IMAGE_STD = (0.26862954, 0.26130258, 0.27577711)
DEFAULT_IMAGE_SIZE = 560  # what llama.cpp's converter writes when the config has none (warm-up size)
VISION_NORM_EPS = 1e-6  # the vision tower's RMSNorm epsilon (fixed in the reference)
VISION_PREFIX = "thinker.visual."  # the checkpoint's vision tower and merger
FILE_TYPES = {
    "f32": gguf.LlamaFileType.ALL_F32,
    "f16": gguf.LlamaFileType.MOSTLY_F16,
    "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
}
_PATCH = gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.V_ENC_EMBD_PATCH]


def window_pattern(fullatt_block_indexes: list[int]) -> int:
    """clip.cpp's `n_wa_pattern`: full attention on every n-th block (the last of each group)."""
    if not fullatt_block_indexes:
        raise ValueError("the vision config has no fullatt_block_indexes")
    pattern = fullatt_block_indexes[0] + 1
    steps = np.diff(fullatt_block_indexes)
    if np.any(steps != pattern):
        raise ValueError(f"full-attention blocks {fullatt_block_indexes} are not every {pattern}th block")
    return pattern


def gguf_names(names: list[str], depth: int) -> list[tuple[str, str, int | None]]:
    """(GGUF name, checkpoint name, frame of the patch kernel or None) for the vision tensors `names`
    (checkpoint names, under `thinker.visual.`)."""
    # The merger's layers are named like blocks (mm.0, mm.2): the map must reach index 2 too.
    mapping = gguf.get_tensor_name_map(gguf.MODEL_ARCH.MMPROJ, max(depth, 3))
    plan: list[tuple[str, str, int | None]] = []
    for name in names:
        if name.endswith("patch_embed.proj.weight"):
            plan += [(f"{_PATCH}.weight", name, 0), (f"{_PATCH}.weight.1", name, 1)]
            continue
        mapped = mapping.get_name(name.removeprefix("thinker."), try_suffixes=(".weight", ".bias"))
        if mapped is None:
            raise ValueError(f"no llama.cpp name for the vision tensor {name}")
        plan.append((mapped, name, None))
    return plan


def write_mmproj_gguf(checkpoint: Checkpoint, out_path: Path, dtype: str) -> None:
    """Write the checkpoint's vision tower and merger as an mmproj GGUF; matrices in `dtype`."""
    tensors = dict(checkpoint.tensors(checkpoint.names(VISION_PREFIX)))
    vision = checkpoint.thinker_config["vision_config"]
    width = int(checkpoint.text_config["hidden_size"])
    write_vision_gguf(vision, width, tensors, out_path, dtype, f"{checkpoint.path.name} vision")


def write_vision_gguf(
    vision: dict, text_width: int, tensors: dict[str, torch.Tensor], out_path: Path, dtype: str, name: str
) -> None:
    """An mmproj GGUF from a vision config (the checkpoint's `vision_config`), the Thinker's width
    and the vision tensors under their checkpoint names (`thinker.visual.*`); matrices in `dtype`
    ("f32", "f16" or "q8_0"), norms and biases in float32 as llama.cpp's converter keeps 1-D tensors."""
    writer = gguf.GGUFWriter(str(out_path), "clip")
    writer.add_type(gguf.GGUFType.MMPROJ)
    writer.add_name(name)
    writer.add_file_type(FILE_TYPES[dtype])
    writer.add_clip_has_vision_encoder(True)
    writer.add_clip_projector_type(gguf.VisionProjectorType.QWEN25O)
    writer.add_vision_projection_dim(text_width)
    writer.add_vision_image_size(int(vision.get("image_size", DEFAULT_IMAGE_SIZE)))
    writer.add_vision_patch_size(int(vision["patch_size"]))
    writer.add_vision_embedding_length(int(vision["hidden_size"]))
    writer.add_vision_feed_forward_length(int(vision["intermediate_size"]))
    writer.add_vision_block_count(int(vision["depth"]))
    writer.add_vision_head_count(int(vision["num_heads"]))
    writer.add_vision_image_mean(list(IMAGE_MEAN))
    writer.add_vision_image_std(list(IMAGE_STD))
    writer.add_vision_use_silu(True)
    writer.add_vision_n_wa_pattern(window_pattern(list(vision["fullatt_block_indexes"])))
    writer.add_vision_attention_layernorm_eps(VISION_NORM_EPS)

    for gguf_name, checkpoint_name, frame in gguf_names(sorted(tensors), int(vision["depth"])):
        tensor = tensors[checkpoint_name]
        if frame is not None:
            tensor = tensor[:, :, frame]
        _add_tensor(writer, gguf_name, tensor, dtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _add_tensor(writer: gguf.GGUFWriter, name: str, tensor: torch.Tensor, dtype: str) -> None:
    """One tensor: 1-D in float32; a matrix in `dtype`, except that Q8_0 takes only rows of whole
    32-value blocks (the patch kernel's rows are 14 wide): those stay float16, as in ggml-org's files."""
    if tensor.dim() == 1 or dtype == "f32":
        writer.add_tensor(name, tensor.float().contiguous().numpy())
        return
    q8_block = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.Q8_0][0]
    if dtype == "q8_0" and tensor.shape[-1] % q8_block == 0:
        values = tensor.float().contiguous().numpy()
        quantized = gguf.quants.quantize(values, gguf.GGMLQuantizationType.Q8_0)
        writer.add_tensor(
            name, quantized, raw_shape=quantized.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0
        )
        return
    writer.add_tensor(name, tensor.to(torch.float16).contiguous().numpy())
