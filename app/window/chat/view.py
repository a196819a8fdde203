"""The chat: the conversation's messages as HTML, the user's on the right and the assistant's on
the left, each in a bubble of the theme's colours; replies rendered from Markdown (code blocks in
monospace on their own background, wrapped so that nothing runs off the side), attached images
as thumbnails and recordings as links that play them again.

What is shown is sanitized: control characters a reply may hold (NUL, ESC and its terminal colour
sequences, ...) never reach the renderer, and a reply's HTML is shown as text. The messages
themselves keep the text as it came (the history stores what the model said).

Threads: the GUI thread only; a replayed recording plays through PortAudio's own thread.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QEvent, QPointF, QRectF, QSettings, QUrl, Signal, Slot
from PySide6.QtGui import QDesktopServices, QPainter, QPaintEvent, QTextCursor, QTextDocument
from PySide6.QtWidgets import QTextBrowser, QWidget

from app.history.store import Attachment
from app.shown_text import displayed
from app.sound.playback import Playback
from app.sound.playback import StreamFactory as OutputStreamFactory
from app.window.chat.attachments import load_attachment
from app.window.chat.bubbles import Bubble, laid_out, paint_bubbles, take_bubbles
from app.window.preferences import Preferences
from app.window.theme import LIGHT_CHAT, READING_SCALE, ChatColors, chat_colors
from model.audio_rates import INPUT_SAMPLE_RATE
from model.errors import OmnideskError
from model.media import Audio

THUMBNAIL_WIDTH = 160  # images in the chat view
ASIDE = 18  # percent of the width left beside a message, on the side it does not come from
EMPTY_HINT = "Ask anything: type below, hold to talk, or attach an image or a recording."

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_MARKDOWN = QTextDocument.MarkdownFeature


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
        self.bubbles: list[Bubble] = []  # the messages' bubbles, in order, painted rounded behind the text
        self._shapes: list[tuple[QRectF, Bubble]] = []  # ... with their rectangles in the layout of
        self._layout_key: tuple = ()  # ... this document revision and size
        self.setOpenLinks(False)
        font = self.font()
        font.setPointSizeF(font.pointSizeF() * READING_SCALE)  # the calm type scale: app.window.theme
        self.setFont(font)
        self.anchorClicked.connect(self._on_link_clicked)

    def transcript(self) -> str:
        """The conversation as plain text (what the chat view shows, without formatting)."""
        return "\n\n".join(f"{m.role}: {m.text}" for m in self.messages)

    def show_messages(self, messages: Iterable[Message]) -> None:
        self.messages = list(messages)
        self.redraw()

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

    @Slot()
    def redraw(self) -> None:
        colours = chat_colors(self.palette())
        if not self.messages:
            hint = html.escape(EMPTY_HINT)
            self.setHtml(f'<p align="center" style="margin-top:40px; color:{colours.muted}">{hint}</p>')
            self.bubbles = []
            return
        self.setHtml("".join(message_html(m, colours) for m in self.messages))
        self.bubbles = take_bubbles(self.document())
        self.moveCursor(QTextCursor.MoveOperation.End)

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802 (Qt override)
        """The bubbles first (app.window.chat.bubbles), then the text over them. Their rectangles are
        found again only when the document or its layout changed: finding them for 200 messages
        took 40 ms, more than a paint of the rest."""
        document = self.document()
        layout_key = (document.revision(), document.size().toTuple())
        if layout_key != self._layout_key:
            self._shapes, self._layout_key = laid_out(document, self.bubbles), layout_key
        offset = QPointF(self.horizontalScrollBar().value(), self.verticalScrollBar().value())
        painter = QPainter(self.viewport())
        painter.translate(-offset)
        paint_bubbles(painter, self._shapes, QRectF(event.rect()).translated(offset))
        painter.end()
        super().paintEvent(event)

    def changeEvent(self, event: QEvent) -> None:  # noqa: N802 (Qt override)
        super().changeEvent(event)
        if event.type() == QEvent.Type.PaletteChange:  # another theme: the bubbles' colours follow
            self.redraw()

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


def message_html(message: Message, colours: ChatColors) -> str:
    """One message as a bubble: the user's on the right, the assistant's on the left."""
    mine = message.role == "user"
    name = "You" if mine else "Omnidesk"
    background, foreground = (colours.user, colours.user_text) if mine else (colours.assistant, colours.text)
    note = f' <i style="font-weight:400">({html.escape(displayed(message.note))})</i>' if message.note else ""
    heading = foreground if mine else colours.muted
    parts = [f'<p style="margin:0 0 6px 0; font-size:small; color:{heading}"><b>{name}</b>{note}</p>']
    if mine:
        parts += [attachment_html(a) for a in message.attachments]
        if message.text:
            text = html.escape(displayed(message.text)).replace("\n", "<br>")
            parts.append(f'<p style="margin:0">{text}</p>')
    elif message.text or not message.note:
        parts.append(markdown_html(message.text or "…", colours.code))
    bubble = f'<td bgcolor="{background}" style="color:{foreground}">{"".join(parts)}</td>'
    aside = f'<td width="{ASIDE}%"></td>'
    row = aside + bubble if mine else bubble + aside
    table = '<table width="100%" cellspacing="0" cellpadding="12" style="margin-bottom:12px">'
    return f"{table}<tr>{row}</tr></table>"


def attachment_html(attachment: Attachment) -> str:
    url = html.escape(QUrl.fromLocalFile(str(attachment.path)).toString(), quote=True)
    if attachment.kind == "image":
        return f'<p><img src="{url}" width="{THUMBNAIL_WIDTH}"></p>'
    return f'<p><a href="{url}">▶ Play the recording</a></p>'


def markdown_html(text: str, code_background: str = LIGHT_CHAT.code) -> str:
    """A reply's Markdown (code blocks, lists, emphasis) as HTML for the chat view. Fenced code
    blocks are set apart on `code_background`, wrapped; a block still open (the reply is streaming)
    runs to the end."""
    parts = []
    for code, lines in _blocks(displayed(text).split("\n")):
        if code:
            parts.append(_code_html("\n".join(lines), code_background))
        elif any(line.strip() for line in lines):
            parts.append(_prose_html("\n".join(lines), code_background))
    return "".join(parts)


def _blocks(lines: list[str]) -> Iterable[tuple[bool, list[str]]]:
    """(is code, lines) runs: prose, and the insides of fenced code blocks."""
    run: list[str] = []
    fence = ""
    for line in lines:
        opened = _FENCE.match(line)
        if not fence and opened:
            yield False, run
            run, fence = [], opened.group(1)
        elif fence and line.strip().startswith(fence) and not line.strip().strip(fence[0]):
            yield True, run
            run, fence = [], ""
        else:
            run.append(line)
    yield bool(fence), run


def _code_html(code: str, background: str) -> str:
    return (
        '<table width="100%" cellspacing="0" cellpadding="8" style="margin:4px 0">'
        f'<tr><td bgcolor="{background}">'
        f'<pre style="white-space:pre-wrap; font-family:monospace">{html.escape(code)}</pre>'
        "</td></tr></table>"
    )


def _prose_html(text: str, code_background: str) -> str:
    document = QTextDocument()
    document.setMarkdown(text, _MARKDOWN.MarkdownDialectGitHub | _MARKDOWN.MarkdownNoHTML)
    body = document.toHtml()
    start, end = body.find("<body"), body.rfind("</body>")
    body = body[body.find(">", start) + 1 : end] if start >= 0 else body
    inline_code = "font-family:'monospace';"
    return body.replace(inline_code, f"{inline_code} background-color:{code_background};")
