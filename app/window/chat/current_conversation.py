"""The conversation the window shows, as the history keeps it.

A question is written when it is asked, its media saved beside the history first, so that
nothing the user made is lost; its reply is written empty and updated as it grows.

Threads: the GUI thread only (`History` is not thread-safe).
"""

from __future__ import annotations

from PySide6.QtCore import QObject, Signal

from app.history.store import Attachment, History, StoredMessage
from app.window.chat.attachments import save_media
from model.errors import OmnideskError
from model.media import Audio, Image


class CurrentConversation(QObject):
    """Signals:
    notice(str): an attachment could not be kept in the history (the question still goes).
    """

    notice = Signal(str)

    def __init__(self, history: History, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.history = history
        self.id: int | None = None  # None: a new chat, not saved until its first question
        self._reply_id: int | None = None

    def ask(self, text: str, media: list[Image | Audio]) -> tuple[Attachment, ...]:
        """Keep a question and an empty reply; returns the media as kept."""
        if self.id is None:
            self.id = self.history.new_conversation()
        question = self.history.add_message(self.id, "user", text)
        attached = self._keep_media(question, media)
        self._reply_id = self.history.add_message(self.id, "assistant", "")
        return attached

    def save_reply(self, text: str, note: str) -> None:
        if self._reply_id is not None:
            self.history.update_message(self._reply_id, text, note)

    def not_answered(self, message: str) -> None:
        """The reply never came: keep why, in place of its text."""
        if self._reply_id is not None:
            self.history.update_message(self._reply_id, "", note=f"not answered: {message}")
            self._reply_id = None

    def open(self, conversation: int) -> list[StoredMessage]:
        """Continue a saved conversation; its messages, oldest first."""
        self.id, self._reply_id = conversation, None
        return self.history.messages(conversation)

    def start_new(self) -> None:
        self.id, self._reply_id = None, None

    def _keep_media(self, message: int, media: list[Image | Audio]) -> tuple[Attachment, ...]:
        assert self.id is not None
        folder = self.history.media_dir(self.id)
        kept = []
        for n, item in enumerate(media, 1):
            kind = "image" if isinstance(item, Image) else "audio"
            try:
                path = save_media(item, folder, f"{message}-{n}-{kind}")
            except (OSError, OmnideskError) as exc:
                self.notice.emit(f"Could not keep an attachment in the history: {exc}")
                continue
            self.history.attach(message, kind, path)
            kept.append(Attachment(kind, path))
        return tuple(kept)
