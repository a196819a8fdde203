"""Qwen2.5-Omni's vision tower run natively by torch, from the bundle's mmproj (see `encoder`)."""

from model.vision_tower.encoder import NativeVisionEncoder

__all__ = ["NativeVisionEncoder"]
