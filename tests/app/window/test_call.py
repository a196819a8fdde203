"""The live call in the window: the status line says the screen is shared; on a real X screen with a real
sound server, a screen call makes a turn of each question, whose frames show the screen of its own time,
laid out at the reference's positions; the history keeps each turn's recording and a frame; an ended
call leaves nothing behind."""

from __future__ import annotations

import numpy as np
import torch

from app.window.call import CALL_SOURCE_KEY
from app.window.main_window import Devices
from tests.app.fakes import MicrophoneFactory
from tests.app.window.call_on_the_screen import FIRST_COLOUR, SECOND_COLOUR
from tests.app.window.on_an_x_screen import run_on_an_x_screen
from tests.app.windows import open_window


def test_a_screen_call_says_the_screen_is_shared_while_it_is_on(qtbot, settings, history_store):
    """What the screen shows goes to the model all through a screen call: the status line says so in red,
    as for Share screen, until the call ends (here at once: no model is loaded, which the window says)."""
    settings.setValue(CALL_SOURCE_KEY, "screen")
    window = open_window(qtbot, settings, history_store, Devices(microphone_stream=MicrophoneFactory()))
    notices: list[str] = []
    window.call.notice.connect(notices.append)
    window.call.button.click()
    assert window.status_line.in_use.text() == "● Microphone on  ● Screen shared"
    qtbot.waitUntil(lambda: not window.call.button.isChecked(), timeout=10_000)
    assert notices and "load a model bundle" in notices[0]
    assert not window.status_line.in_use.isVisibleTo(window), "neither the screen nor the microphone"
    window.close()


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

    # The second turn's prompt: both calls' videos with their sound, each at the reference's positions.
    # Each is compared on its own, after the same three text tokens (a span's positions depend only on
    # where the one before it ended): the tiny model's replies between them are random ids, special
    # ones included, which the reference's `get_rope_index` would count as media.
    prompt, tokens = seen["prompt"], tiny_bundle.tokens
    ids, ours = prompt["ids"], np.array(prompt["positions"])
    starts = [i for i in range(len(ids) - 1) if ids[i : i + 2] == [tokens["vision_bos"], tokens["audio_bos"]]]
    assert len(starts) == len(prompt["grids"]) == 2
    for start, grid in zip(starts, prompt["grids"], strict=True):
        end = ids.index(tokens["vision_eos"], start) + 1
        span = [10, 11, 12, *ids[start:end]]
        positions, _ = reference_model.thinker.get_rope_index(
            torch.tensor([span]),
            video_grid_thw=torch.tensor([[grid["t"], grid["h"], grid["w"]]]),
            attention_mask=torch.ones(1, len(span), dtype=torch.long),
            use_audio_in_video=True,
            audio_seqlens=torch.tensor([grid["mel_frames"]]),
            second_per_grids=torch.tensor([grid["seconds"]]),
        )
        reference = positions[:, 0, 3:].numpy() - 3
        np.testing.assert_array_equal(ours[:, start:end] - ours[0, start], reference)
