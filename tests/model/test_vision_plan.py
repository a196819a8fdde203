"""The plan's vision part: which encoder runs where, how many embeddings an image gets, and what the
user is told; on made-up machines (nothing loaded), and the resize at each budget against the
reference's processor."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from model.media import Image
from model.perception import Perception
from model.placement import PlanChoice, make_plan
from model.vision import MIN_PIXELS, TowerPrecision, VisionOptions, fit_image
from model.vision_plan import (
    CPU_SPEEDS,
    LOOK_SECONDS,
    NEEDS_BF16,
    PIXELS_PER_EMBEDDING,
    QUICK_EMBEDDINGS,
    SHARP_EMBEDDINGS,
    EncoderSpeed,
    VisionPlan,
    plan_vision,
    prompt_seconds,
)
from tests.helpers import photo_like
from tests.model.test_placement import CPU_ONLY, NEEDS_3B
from tests.model.test_vision import reference_embeddings

TWO_CORES = replace(CPU_ONLY, cpu_count=2)


def cpu(detail="auto", exact=False, bf16=True, threads=2, prompt_s=0.0) -> VisionPlan:
    return plan_vision(
        detail,
        exact=exact,
        torch_gpu=None,
        llama_gpu=False,
        cpu_bf16=bf16,
        threads=threads,
        prompt_s=prompt_s,
    )


class TestEncoder:
    def test_the_cpu_runs_the_fastest_variant_measured(self):
        plan = cpu()
        fastest = min(CPU_SPEEDS, key=lambda v: CPU_SPEEDS[v].seconds(SHARP_EMBEDDINGS, 1))
        assert plan.variant == fastest
        assert plan.error == CPU_SPEEDS[fastest].error
        print(f"\n{plan.label}")

    def test_a_cpu_without_bfloat16_kernels_never_gets_a_variant_that_needs_them(self):
        assert cpu(bf16=False).variant not in NEEDS_BF16

    def test_exact_quality_keeps_the_references_arithmetic_and_budget(self):
        plan = cpu(exact=True)
        assert plan.variant == "torch-float32" and plan.tower == TowerPrecision()
        assert plan.embeddings == SHARP_EMBEDDINGS and cpu("quick", exact=True).embeddings == QUICK_EMBEDDINGS

    def test_a_gpu_torch_can_use_runs_the_tower_there_with_the_sharp_budget(self):
        plan = plan_vision("auto", False, ("cuda", torch.bfloat16), llama_gpu=True, cpu_bf16=True, threads=8)
        assert plan.tower == TowerPrecision("cuda", torch.bfloat16)
        assert plan.embeddings == SHARP_EMBEDDINGS

    def test_a_gpu_only_llama_cpp_can_use_runs_mtmd(self):
        plan = plan_vision("auto", False, None, llama_gpu=True, cpu_bf16=False, threads=8)
        assert plan.tower is None and plan.embeddings == SHARP_EMBEDDINGS


class TestBudget:
    @pytest.mark.parametrize("threads", [1, 2, 4, 16])
    def test_automatic_fits_the_time_of_a_question_or_its_bounds(self, threads):
        plan = cpu(threads=threads)
        speed = CPU_SPEEDS[plan.variant]
        assert QUICK_EMBEDDINGS <= plan.embeddings <= SHARP_EMBEDDINGS
        if QUICK_EMBEDDINGS < plan.embeddings < SHARP_EMBEDDINGS:
            assert (
                speed.seconds(plan.embeddings, threads)
                <= LOOK_SECONDS
                < speed.seconds(plan.embeddings + 1, threads)
            )
        print(f"\n{threads} threads: {plan.label}")

    def test_the_prompt_s_cost_of_an_embedding_counts_as_encoding_does(self):
        """On a CPU the Thinker's and the Talker's prefill of an embedding cost more than encoding it:
        Automatic gives what encoding and prefilling both fit in LOOK_SECONDS."""
        speed = CPU_SPEEDS["torch-bfloat16"]
        prompt_s = prompt_seconds(NEEDS_3B.thinker_bytes, True, talker_prompt="bfloat16 copy")
        plan = cpu(threads=16, prompt_s=prompt_s)
        assert QUICK_EMBEDDINGS < plan.embeddings < cpu(threads=16).embeddings
        assert speed.seconds(plan.embeddings, 16, prompt_s) <= LOOK_SECONDS
        assert speed.seconds(plan.embeddings + 1, 16, prompt_s) > LOOK_SECONDS
        print(f"\n16 threads, the 3B's prompt {prompt_s * 1e3:.1f} ms per embedding: {plan.embeddings}")

    def test_the_plan_counts_the_prompt_only_where_it_runs_on_the_cpu(self):
        assert prompt_seconds(4 * 10**9, thinker_on_cpu=False, talker_prompt=None) == 0
        slower_talker = prompt_seconds(0, False, talker_prompt="quantized")
        assert slower_talker > prompt_seconds(0, False, talker_prompt="llama.cpp") > 0
        assert prompt_seconds(0, False, "llama.cpp") > prompt_seconds(0, False, "bfloat16 copy") > 0
        bigger = prompt_seconds(4 * 10**9, True, None)
        assert bigger == 2 * prompt_seconds(2 * 10**9, True, None)
        two_cores = make_plan(replace(TWO_CORES, cpu_bf16=True), NEEDS_3B)
        print(f"\ntwo cores, 3B: {two_cores.vision.label}")
        assert two_cores.vision.embeddings == QUICK_EMBEDDINGS  # encoding alone would fit 461

    def test_more_threads_never_get_fewer_embeddings(self):
        budgets = [cpu(threads=t).embeddings for t in (1, 2, 4, 8, 16)]
        assert budgets == sorted(budgets)

    def test_sharp_and_quick_override_it(self):
        assert cpu("sharp").embeddings == SHARP_EMBEDDINGS
        assert cpu("quick").embeddings == QUICK_EMBEDDINGS

    def test_the_speed_model_inverts(self):
        speed = EncoderSpeed(linear_s=0.01, quadratic_s=2e-6, error=0.0)
        n = speed.embeddings_within(3.0, threads=2)
        assert speed.seconds(n, 2) <= 3.0 < speed.seconds(n + 1, 2)

    @pytest.mark.parametrize("embeddings", [QUICK_EMBEDDINGS, 500, 812, SHARP_EMBEDDINGS])
    def test_the_resize_at_each_budget_is_the_reference_processors(self, embeddings):
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

        high = embeddings * PIXELS_PER_EMBEDDING
        options = VisionPlan(embeddings=embeddings).options(VisionOptions(), threads=None)
        pixels = photo_like(1080, 1920, seed=embeddings)
        ours = fit_image(pixels, options.min_pixels, options.max_pixels)
        processor = Qwen2VLImageProcessorPil(min_pixels=MIN_PIXELS, max_pixels=high)
        grid = processor(images=[pixels], return_tensors="np")["image_grid_thw"][0]
        assert ours.shape[:2] == (grid[1] * 14, grid[2] * 14)
        assert ours.shape[0] * ours.shape[1] <= high


class TestNotice:
    def test_a_screen_shrunk_until_small_text_blurs_is_said_once_naming_the_setting(
        self, tiny_bundle, thinker
    ):
        quick = VisionOptions(max_pixels=QUICK_EMBEDDINGS * PIXELS_PER_EMBEDDING)
        perception = Perception(tiny_bundle, thinker, quick)
        screen = Image(photo_like(1080, 1920, seed=1))
        first = perception.encode_image(screen)
        assert first.shrunk is not None and first.shrunk.size == (1920, 1080)
        assert "small text may not be readable" in first.shrunk.message
        assert "Settings > Detail: Sharp" in first.shrunk.message
        print(f"\n{first.shrunk.message}")
        assert perception.encode_image(screen).shrunk is None, "said once"

    def test_sharp_and_pictures_kept_large_enough_are_not_noted(self, tiny_bundle, thinker):
        sharp = Perception(tiny_bundle, thinker, VisionOptions())
        assert sharp.encode_image(Image(photo_like(1080, 1920, seed=1))).shrunk is None
        quick = Perception(
            tiny_bundle, thinker, VisionOptions(max_pixels=QUICK_EMBEDDINGS * PIXELS_PER_EMBEDDING)
        )
        assert quick.encode_image(Image(photo_like(500, 500, seed=2))).shrunk is None


class TestPlanToEncoder:
    def test_the_plan_sets_the_encoder_budget_and_threads(self):
        plan = make_plan(TWO_CORES, NEEDS_3B, PlanChoice(detail="quick"))
        options = plan.vision_options(VisionOptions())
        assert options.tower == plan.vision.tower
        assert options.max_pixels == QUICK_EMBEDDINGS * PIXELS_PER_EMBEDDING
        assert options.n_threads == 2
        assert any(line.startswith("Vision:") for line in plan.describe())

    def test_perception_encodes_with_the_tower_the_options_name(self, tiny_bundle, thinker, reference_model):
        options = VisionOptions(tower=TowerPrecision(), max_pixels=QUICK_EMBEDDINGS * PIXELS_PER_EMBEDDING)
        perception = Perception(tiny_bundle, thinker, options)
        pixels = photo_like(600, 800, seed=4)
        encoded = perception.encode_image(Image(pixels))
        assert type(perception._vision_encoder()).__name__ == "NativeVisionEncoder"
        assert encoded.embeddings.shape[0] <= QUICK_EMBEDDINGS
        resized = fit_image(pixels, max_pixels=options.max_pixels)
        ref, _ = reference_embeddings(reference_model, resized)
        assert float(abs(encoded.embeddings - ref).max()) <= 1e-5 * float(abs(ref).max())
