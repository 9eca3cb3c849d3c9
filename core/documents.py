"""Documents and audio in a prompt, as the token estimate counts them.

Providers bill a PDF by its pages, not by its bytes: Claude bills each page's text (1,500 to
3,000 tokens for a dense page) and an image of it, OpenAI the extracted text and an image
of each page. Counted as the text of its base64 data, a 2 MB scan of ten pages read as a
million tokens, and a $1 cap refused the call that would have cost about ten cents. Audio
is billed by its length: a minute of WAV read as about 950,000 tokens.
"""

from __future__ import annotations

import base64
import binascii
import re
import struct
import zlib
from collections.abc import Mapping
from typing import Any

__all__ = [
    "AUDIO_BLOCK_TYPES",
    "AUDIO_TOKENS_PER_SECOND",
    "FILE_BLOCK_TYPES",
    "PAGE_TOKENS",
    "audio_data",
    "audio_seconds",
    "decoded",
    "file_payload",
    "pdf_pages",
]

#: Prompt tokens assumed for one page of a PDF: the top of the range Anthropic gives for a
#: dense page's text; the page's image and denser pages are learned from the bill from the
#: run's second call on (``Run.prompt_gap``).
PAGE_TOKENS = 3000
#: Content-block types that carry a document: Anthropic's ``document``, OpenAI's chat
#: ``file`` (LangChain's and LiteLLM's too) and Responses ``input_file``.
FILE_BLOCK_TYPES = frozenset({"document", "file", "input_file"})

#: Prompt tokens assumed for one second of audio: Gemini's figure (32); OpenAI's audio models
#: bill about 10.
AUDIO_TOKENS_PER_SECOND = 32
#: Content-block types that carry audio: OpenAI's chat ``input_audio``, LangChain's ``audio``.
AUDIO_BLOCK_TYPES = frozenset({"input_audio", "audio"})
_COMPRESSED_AUDIO_BYTES_PER_SECOND = 16_000  # 128 kbit/s (MP3, AAC): a lower rate is longer

_PAGE = re.compile(rb"/Type\s*/Page(?![A-Za-z])")  # a page object, not the /Pages tree
_OBJECT_STREAM = re.compile(rb"/Type\s*/ObjStm\b.{0,512}?stream\r?\n", re.DOTALL)
_INFLATED_MAX = 64 * 1024 * 1024  # what one object stream may inflate to (a zip bomb's end)
_BYTES_PER_UNCOUNTED_PAGE = 50_000  # a PDF whose pages cannot be found: one per 50 KB


def file_payload(block: Mapping[str, Any]) -> tuple[Any, bool] | None:
    """A document block's content and whether it is base64, or None for a reference (a
    file id, a URL) or a shape not known.

    Anthropic: ``{"type": "document", "source": {"type": "base64" | "text" | "content",
    "data" | "content": ...}}``; OpenAI chat: ``{"type": "file", "file": {"file_data":
    "data:application/pdf;base64,..."}}``; Responses: ``{"type": "input_file", "file_data":
    ...}``; LangChain: ``{"type": "file", "base64": ...}`` (``"source_type": "base64",
    "data": ...`` before 1.0).
    """
    source = block.get("source")
    if isinstance(source, Mapping):
        kind = source.get("type")
        if kind == "content":
            return source.get("content"), False
        if kind in ("base64", "text"):
            return source.get("data"), kind == "base64"
        return None
    inner = block.get("file")
    fields = inner if isinstance(inner, Mapping) else block
    for key in ("file_data", "base64"):
        data = fields.get(key)
        if isinstance(data, str):
            return data, True
    if fields.get("source_type") == "base64":
        return fields.get("data"), True
    return None


def decoded(data: str) -> bytes | None:
    """The bytes of base64 ``data`` (a ``data:`` URL's too), or None if it is not base64."""
    if data.startswith("data:"):
        data = data.partition(",")[2]
    try:
        return base64.b64decode(data, validate=False)
    except (binascii.Error, ValueError):
        return None


def pdf_pages(raw: bytes) -> int:
    """The pages of the PDF ``raw``: its page objects, also those packed in compressed
    object streams (most PDFs written since PDF 1.5); for one whose pages cannot be found
    (encrypted object streams), one per 50 KB. 0 when ``raw`` is not a PDF."""
    if not raw.startswith(b"%PDF"):
        return 0
    pages = len(_PAGE.findall(raw))
    for match in _OBJECT_STREAM.finditer(raw):
        start = match.end()
        end = raw.find(b"endstream", start)
        if end < 0:
            end = len(raw)
        try:
            objects = zlib.decompressobj().decompress(raw[start:end], _INFLATED_MAX)
        except zlib.error:
            continue
        pages += len(_PAGE.findall(objects))
    return pages or max(1, len(raw) // _BYTES_PER_UNCOUNTED_PAGE)


def audio_data(block: Mapping[str, Any]) -> str | None:
    """An audio block's base64 data: OpenAI's ``{"type": "input_audio", "input_audio":
    {"data": ..., "format": "wav"}}``, LangChain's ``{"type": "audio", "base64": ...}``
    (``"data"`` before 1.0); None for a reference (a URL, a file id)."""
    inner = block.get("input_audio")
    fields = inner if isinstance(inner, Mapping) else block
    for key in ("data", "base64"):
        data = fields.get(key)
        if isinstance(data, str):
            return data
    return None


def audio_seconds(data: str) -> float:
    """The length of base64 audio ``data``: from a WAV header's byte rate, else at 128
    kbit/s (compressed audio), read from the first bytes and the data's length only."""
    if data.startswith("data:"):
        data = data.partition(",")[2]
    size = len(data) * 3 // 4 - data[-2:].count("=")
    head = decoded(data[:64]) or b""
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE" and len(head) >= 32:
        byte_rate: int = struct.unpack_from("<I", head, 28)[0]
        if byte_rate > 0:
            return max(size - 44, 0) / byte_rate
    return size / _COMPRESSED_AUDIO_BYTES_PER_SECOND
