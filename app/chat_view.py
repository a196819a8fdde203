"""The chat: the conversation's messages as HTML, replies rendered from Markdown, attached
images as thumbnails and recordings as links that play them again.

Threads: the GUI thread only; a replayed recording plays through PortAudio's own thread.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QSettings, QUrl, Signal, Slot
from PySide6.QtGui import QDesktopServices, QTextCursor, QTextDocument
from PySide6.QtWidgets import QTextBrowser, QWidget

from app.attachments import load_attachment
from app.history import Attachment
from app.playback import Playback
from app.playback import StreamFactory as OutputStreamFactory
from app.preferences import Preferences
from model.audio_rates import INPUT_SAMPLE_RATE
from model.errors import OmnideskError
from model.media import Audio

THUMBNAIL_WIDTH = 160  # images in the chat view


@dataclass
class Message:
    """One message as shown; a streaming reply grows in place."""

    role: str  # "user" or "assistant"
    text: str
    note: str = ""  # e.g. "interrupted"
    attachments: tuple[Attachment, ...] = ()


class ChatView(QTextBrowser):
    """Signals:
    notice(str): a recording could not be played again.
    """

    notice = Signal(str)

    def __init__(
        self,
        settings: QSettings,
        playback_stream: OutputStreamFactory | None = None,
        parent: QWidget | None = None,
    ) -> None:
        """`playback_stream`: where replayed recordings go; None: sounddevice's output."""
        super().__init__(parent)
        self._settings = settings
        self._playback_stream = playback_stream
        self._replay: Playback | None = None
        self.messages: list[Message] = []
        self.setOpenLinks(False)
        self.anchorClicked.connect(self._on_link_clicked)

    def transcript(self) -> str:
        """The conversation as plain text (what the chat view shows, without formatting)."""
        return "\n\n".join(f"{m.role}: {m.text}" for m in self.messages)

    def show_messages(self, messages: Iterable[Message]) -> None:
        self.messages = list(messages)
        self.render()

    def add_exchange(self, question: str, attachments: tuple[Attachment, ...]) -> None:
        """A question and its reply, empty until it streams in."""
        self.messages += [Message("user", question, attachments=attachments), Message("assistant", "")]

    def extend_reply(self, text: str) -> None:
        """The next piece of the streaming reply (shown at the next `render`)."""
        reply = self.reply()
        if reply is not None:
            reply.text += text

    def reply(self) -> Message | None:
        """The last message if it is a reply."""
        if self.messages and self.messages[-1].role == "assistant":
            return self.messages[-1]
        return None

    def drop_empty_reply(self) -> bool:
        """Remove the last reply if nothing of it came; whether it was removed."""
        reply = self.reply()
        if reply is None or reply.text:
            return False
        self.messages.pop()
        return True

    @Slot()
    def render(self) -> None:
        parts = []
        for message in self.messages:
            if message.role == "user":
                parts.append("<p><b>You</b></p>")
                parts += [attachment_html(a) for a in message.attachments]
                if message.text:
                    parts.append(f"<p>{html.escape(message.text).replace(chr(10), '<br>')}</p>")
            else:
                parts.append(
                    f"<p><b>Omnidesk</b>{' <i>(' + message.note + ')</i>' if message.note else ''}</p>"
                )
                parts.append(markdown_html(message.text or "…"))
        self.setHtml("".join(parts))
        self.moveCursor(QTextCursor.MoveOperation.End)

    def stop_replay(self) -> None:
        if self._replay is not None:
            self._replay.close()
            self._replay = None

    @Slot(QUrl)
    def _on_link_clicked(self, url: QUrl) -> None:
        if not (url.isLocalFile() and url.toLocalFile().endswith(".wav")):
            QDesktopServices.openUrl(url)
            return
        try:
            samples = load_attachment(Path(url.toLocalFile()))
            assert isinstance(samples, Audio)
            if self._replay is not None:
                self._replay.close()
            device = Preferences.load(self._settings).output_device or None
            self._replay = Playback(INPUT_SAMPLE_RATE, device, stream_factory=self._playback_stream)
        except OmnideskError as exc:
            self.notice.emit(f"Cannot play the recording: {exc}")
            return
        self._replay.write(samples.samples)
        self._replay.finish()


def attachment_html(attachment: Attachment) -> str:
    url = html.escape(QUrl.fromLocalFile(str(attachment.path)).toString(), quote=True)
    if attachment.kind == "image":
        return f'<p><img src="{url}" width="{THUMBNAIL_WIDTH}"></p>'
    return f'<p><a href="{url}">▶ Play the recording</a></p>'


def markdown_html(text: str) -> str:
    """A reply's Markdown (code blocks, lists, emphasis) as HTML for the chat view."""
    document = QTextDocument()
    document.setMarkdown(text)
    body = document.toHtml()
    start, end = body.find("<body"), body.rfind("</body>")
    return body[body.find(">", start) + 1 : end] if start >= 0 else body
