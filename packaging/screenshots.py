"""The README's screenshots of the window, taken on a real X server (Xvfb) with the tiny test model.

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python packaging/screenshots.py [OUT_DIR]

Writes window-light.png and window-dark.png (a conversation, FULL_WIDTH wide), half-light.png and
half-dark.png (the same in HALF_WIDTH: half a 1440 px screen), hands-free-light.png and
hands-free-dark.png (the conversation in HALF_WIDTH with Hands-free hearing a question) and
call-light.png and call-dark.png (a call with the screen hearing a question) to OUT_DIR
(assets/screenshots by default). The model is the
random-weight tiny bundle the tests build, loaded and asked one real question (the status bar's
figures are that turn's); its replies are gibberish, so the conversation shown is staged: written
to the history as a user's would be, with a picture drawn here, and opened from the sidebar.
Hands-free and the call are real: the window listens through PortAudio to a private PulseAudio server
(tests/app/sound_server.py) whose microphone is played a question spoken by espeak-ng; without
PulseAudio and espeak-ng those shots are left out.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import cv2
import numpy as np
from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QApplication

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.history.store import History  # noqa: E402
from app.window.main_window import MainWindow  # noqa: E402
from app.worker import ConversationWorker  # noqa: E402
from model.audio_features import load_audio  # noqa: E402
from model.files.convert import convert_checkpoint  # noqa: E402
from model.talker import SpeechOptions  # noqa: E402
from tests.app import sound_server  # noqa: E402
from tests.fixtures.tiny_checkpoint import build_tiny_checkpoint  # noqa: E402

FULL_WIDTH, HALF_WIDTH, HEIGHT = 1280, 720, 800  # pixels
QUESTION = "What is on this plate, and how do I sort a list of recipes by cooking time in Python?"
REPLY = """It is a **margherita pizza**: tomato, mozzarella and basil on a thin crust.

To sort recipes by their cooking time:

```python
recipes.sort(key=lambda recipe: recipe["minutes"])
```

- `key` picks what to compare;
- add `reverse=True` for the longest first."""
FOLLOW_UP = "And how long should it bake?"
INTERRUPTED = "At about 250 °C, a thin pizza like this one bakes in"
SPOKEN = "Hey, can you tell me what the weather looks like outside this window, and whether I need a coat?"


def wait(app: QApplication, until, seconds: float = 120.0) -> None:
    import time

    deadline = time.monotonic() + seconds
    while not until():
        if time.monotonic() > deadline:
            raise SystemExit("the window did not get there in time")
        app.processEvents()
        time.sleep(0.01)


def picture(path: Path) -> Path:
    """A plate with a pizza, drawn."""
    image = np.full((300, 400, 3), (235, 240, 245), np.uint8)
    cv2.circle(image, (200, 150), 120, (250, 250, 250), -1)
    cv2.circle(image, (200, 150), 100, (60, 140, 220), -1)
    for x, y in ((160, 120), (240, 130), (200, 190), (150, 180), (250, 185)):
        cv2.circle(image, (x, y), 16, (225, 240, 250), -1)
        cv2.circle(image, (x + 10, y - 14), 6, (60, 150, 40), -1)
    cv2.imwrite(str(path), image)
    return path


def older(history: History) -> None:
    """Two older conversations, for the sidebar."""
    for question in ("Plan a weekend in Lisbon", "What does this error message mean?"):
        history.add_message(history.new_conversation(), "user", question)


def staged(history: History) -> int:
    """The conversation shown, written to the history as the window would keep it."""
    chat = history.new_conversation()
    question = history.add_message(chat, "user", QUESTION)
    folder = history.media_dir(chat)
    folder.mkdir(parents=True, exist_ok=True)
    history.attach(question, "image", picture(folder / f"{question}-1-image.png"))
    history.add_message(chat, "assistant", REPLY)
    history.add_message(chat, "user", FOLLOW_UP)
    history.add_message(chat, "assistant", INTERRUPTED, note="interrupted")
    return chat


def shoot(app: QApplication, window: MainWindow, stem: Path, width: int) -> None:
    """STEM-light.png and STEM-dark.png, the window `width` pixels wide."""
    window.resize(width, HEIGHT)
    wait(app, lambda: window.width() == width)
    for theme in ("light", "dark"):
        window.set_theme(theme)
        for _ in range(5):  # palette changes and layouts arrive as events
            app.processEvents()
        window.grab().save(str(stem.parent / f"{stem.name}-{theme}.png"))


def hands_free(
    app: QApplication, window: MainWindow, server: sound_server.SoundServer, work: Path, stem: Path
) -> None:
    """Hands-free on in the conversation, shot while it hears a question played into the microphone."""
    subprocess.run(["espeak-ng", "-w", str(work / "spoken.wav"), SPOKEN], check=True)
    window.hands_free.button.setChecked(True)
    wait(app, lambda: window.hands_free.state == "listening")
    speaker = threading.Thread(target=server.say, args=(load_audio(work / "spoken.wav"),), daemon=True)
    speaker.start()
    wait(app, lambda: window.hands_free.state == "hearing" and window.push_to_talk.level_meter.value() > 40)
    shoot(app, window, stem, HALF_WIDTH)
    window.hands_free.button.setChecked(False)
    speaker.join()


def call(
    app: QApplication, window: MainWindow, server: sound_server.SoundServer, work: Path, stem: Path
) -> None:
    """A call with the screen (its thumbnail the self-view, the bar saying what the model sees), shot
    while it hears a question played into the microphone."""
    window.call.source.setCurrentIndex(window.call.source.findData("screen"))
    window.call.button.setChecked(True)
    wait(app, lambda: window.call.bar.text().startswith("On a call"))
    speaker = threading.Thread(target=server.say, args=(load_audio(work / "spoken.wav"),), daemon=True)
    speaker.start()
    wait(app, lambda: window.hands_free.state == "hearing" and window.push_to_talk.level_meter.value() > 40)
    shoot(app, window, stem, HALF_WIDTH)
    speaker.join()
    wait(app, lambda: not window.session.busy and not window.speech.speaking)
    window.call.button.setChecked(False)


def main(out: Path) -> None:
    app = QApplication(sys.argv[:1])
    work = Path(tempfile.mkdtemp(prefix="omnidesk-shots-"))
    server = None
    if sound_server.available() and shutil.which("espeak-ng"):
        server = sound_server.SoundServer(work / "pulse")
        os.environ["PULSE_SERVER"] = server.env["PULSE_SERVER"]
    else:
        print("PulseAudio or espeak-ng is not installed: the Hands-free shots are left out")
    bundle = convert_checkpoint(build_tiny_checkpoint(work / "checkpoint").path, work / "bundle", dtype="f32")
    settings = QSettings(str(work / "settings.ini"), QSettings.Format.IniFormat)
    history = History(work / "history.sqlite3")
    worker = ConversationWorker(max_tokens=24, speech=SpeechOptions(max_codes=60, min_codes=40))
    window = MainWindow(settings, worker, history)
    window.resize(FULL_WIDTH, HEIGHT)
    window.show()
    window.models.load(str(bundle.root))
    wait(app, lambda: window.models.status.text().startswith("Model:"))
    window.composer.speech_toggle.setChecked(False)
    window.composer.question_box.setPlainText("Hello?")
    window.composer.send_button.click()
    wait(app, lambda: not window.session.busy)
    window.history.delete(window.current.id)
    window.session.on_new_requested()
    window.composer.speech_toggle.setChecked(True)
    older(window.history)
    chat = staged(window.history)
    window.conversations.refresh()
    window.conversations.conversation_chosen.emit(chat)
    window.activity_chip.show_activity("speaking")  # as while a reply is heard (staged too)
    window.composer.set_speaking(True)
    shoot(app, window, out / "window", FULL_WIDTH)
    shoot(app, window, out / "half", HALF_WIDTH)
    window.activity_chip.show_activity("ready")
    window.composer.set_speaking(False)
    if server is not None:
        hands_free(app, window, server, work, out / "hands-free")
        call(app, window, server, work, out / "call")
        server.stop()
    window.close()
    history.close()


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "assets" / "screenshots")
