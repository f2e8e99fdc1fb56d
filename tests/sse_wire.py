"""A WHATWG event-stream parser for the tests, and a fake sink collecting what the hub writes."""

from __future__ import annotations

from dataclasses import dataclass, field

from services.sse import Frame


@dataclass
class Received:
    type: str
    data: str
    id: str | None
    retry: int | None = None


@dataclass
class StreamParser:
    """The event-stream interpretation of the HTML standard (section 9.2.6), incrementally."""

    last_event_id: str = ""
    retry: int | None = None
    events: list[Received] = field(default_factory=list)
    _buffer: str = ""
    _data: list[str] = field(default_factory=list)
    _type: str = ""
    _pending: str = ""

    def feed(self, text: str) -> list[Received]:
        self._pending += text
        new: list[Received] = []
        while True:
            cut = _line_end(self._pending)
            if cut is None:
                return new
            line, rest = cut
            self._pending = rest
            got = self._line(line)
            if got is not None:
                new.append(got)
                self.events.append(got)

    def _line(self, line: str) -> Received | None:
        if line == "":
            if not self._data:
                self._type = ""
                return None
            event = Received(self._type or "message", "\n".join(self._data), self.last_event_id)
            event.retry = self.retry
            self._data, self._type = [], ""
            return event
        if line.startswith(":"):
            return None
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._type = value
        elif name == "id" and "\0" not in value:
            self.last_event_id = value
        elif name == "retry" and value.isdigit():
            self.retry = int(value)
        return None


def _line_end(text: str) -> tuple[str, str] | None:
    for index, char in enumerate(text):
        if char == "\n":
            return text[:index], text[index + 1 :]
        if char == "\r":
            if index + 1 == len(text):
                return None  # wait: it may be CRLF
            skip = 2 if text[index + 1] == "\n" else 1
            return text[:index], text[index + skip :]
    return None


def parse(text: str) -> list[Received]:
    parser = StreamParser()
    parser.feed(text)
    return parser.events


class BufferSink:
    """A client that reads what it is told to; `capacity` bytes unread make it slow."""

    def __init__(self, *, chunked: bool = False, reading: bool = True) -> None:
        self.chunks: list[bytes] = []
        self.chunked = chunked
        self.reading = reading
        self.unread = 0
        self.gone = False
        self.aborted = False
        self.ended = False

    def send(self, frame: Frame) -> int:
        if self.gone or self.aborted or self.ended:
            return -1
        data = frame.chunked if self.chunked else frame.raw
        self.chunks.append(data)
        if not self.reading:
            self.unread += len(data)
        return self.unread

    def buffered(self) -> int:
        return -1 if self.gone or self.aborted or self.ended else self.unread

    def abort(self) -> None:
        self.aborted = True

    def end(self) -> None:
        self.ended = True

    def drain(self) -> None:
        self.unread = 0

    @property
    def text(self) -> str:
        return b"".join(self.chunks).decode("utf-8")

    def events(self) -> list[Received]:
        return parse(self.text)
