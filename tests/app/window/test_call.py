"""The live call in the window: on a real X screen with a real sound server, a screen call makes a turn of
each question, whose frames show the screen of its own time, laid out at the reference's positions; the
history keeps each turn's recording and a frame; an ended call leaves nothing behind."""

from __future__ import annotations

import numpy as np
import torch

from tests.app.window.call_on_the_screen import FIRST_COLOUR, SECOND_COLOUR
from tests.app.window.on_an_x_screen import run_on_an_x_screen


def test_a_screen_call_of_two_questions_on_a_real_x_screen(
    tiny_bundle, sound_server, spoken_samples, tmp_path, reference_model
):
    speech, report = tmp_path / "speech.npy", tmp_path / "report.json"
    np.save(speech, spoken_samples)
    module = "tests.app.window.call_on_the_screen"
    seen = run_on_an_x_screen(module, str(tiny_bundle.root), str(speech), str(report))
    print({key: value for key, value in seen.items() if key != "prompt"})
    assert seen["bar"].startswith("On a call with the screen: ")
    assert seen["replies"] == ["end", "end"] or all(r in ("end", "length") for r in seen["replies"])
    first, second = seen["turns"]
    for turn in (first, second):
        assert turn["call_turn"] == "CallTurn" and turn["use_audio_in_video"]
        assert turn["frames"] >= 2 and turn["sound_s"] > 1.0
    assert set(map(tuple, first["colours"])) == {FIRST_COLOUR}, "the first turn saw the screen of its time"
    assert set(map(tuple, second["colours"])) == {SECOND_COLOUR}, "the second, the screen changed since"
    assert seen["stored"] == [["image", "audio"], ["image", "audio"]], "each turn's frame and recording"
    assert not seen["call_after"] and seen["cached_after"] <= seen["history_prompt"] + 8

    prompt = seen[
        "prompt"
    ]  # the second turn's: both calls' videos with their sound, at the reference's positions
    grids = prompt["grids"]
    positions, _ = reference_model.thinker.get_rope_index(
        torch.tensor([prompt["ids"]]),
        video_grid_thw=torch.tensor([[g["t"], g["h"], g["w"]] for g in grids]),
        attention_mask=torch.ones(1, len(prompt["ids"]), dtype=torch.long),
        use_audio_in_video=True,
        audio_seqlens=torch.tensor([g["mel_frames"] for g in grids]),
        second_per_grids=torch.tensor([g["seconds"] for g in grids]),
    )
    assert len(grids) == 2
    np.testing.assert_array_equal(np.array(prompt["positions"]), positions[:, 0].numpy())
