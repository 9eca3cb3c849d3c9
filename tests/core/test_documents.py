"""Documents in a prompt count by their pages, audio by its length, not by the length of
their base64 data.

Counted as text, a 2 MB scan of ten pages read as about a million tokens, and a $1 cap on
gpt-4o refused the call that would have cost about ten cents.
"""

from __future__ import annotations

import base64
import zlib
from typing import Any

import pytest
from langchain_core.messages import HumanMessage

from budgetwarden import Limits, Policy, Usage
from budgetwarden.documents import (
    AUDIO_TOKENS_PER_SECOND,
    PAGE_TOKENS,
    audio_seconds,
    file_payload,
    pdf_pages,
)
from budgetwarden.usage import CHARS_PER_TOKEN, audio_chars, estimate_message_tokens, file_chars

from .helpers import make_warden

SCAN = bytes(range(256)) * 8192  # 2 MB of image data, as a scanner writes it


def pdf(pages: int, *, packed: bool = False, filler: bytes = b"") -> bytes:
    """A PDF of ``pages`` pages: page objects written plainly (PDF 1.4) or packed in a
    compressed object stream (PDF 1.5 and later, as most writers do now)."""
    kids = b" ".join(b"%d 0 R" % (3 + n) for n in range(pages))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, pages),
        *[b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] >>"] * pages,
    ]
    if packed:
        stream = zlib.compress(b"\n".join(objects))
        body = b"1 0 obj\n<< /Type /ObjStm /N %d /First 0 /Filter /FlateDecode /Length %d >>\n" % (
            len(objects),
            len(stream),
        )
        body += b"stream\n" + stream + b"\nendstream\nendobj\n"
    else:
        body = b"".join(b"%d 0 obj\n%s\nendobj\n" % (n + 1, o) for n, o in enumerate(objects))
    return b"%PDF-1.5\n" + body + filler + b"\n%%EOF\n"


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


@pytest.mark.parametrize("packed", [False, True], ids=["page objects", "object stream"])
def test_pdf_pages_counts_page_objects_not_the_page_tree(packed: bool) -> None:
    assert pdf_pages(pdf(7, packed=packed)) == 7
    assert pdf_pages(pdf(7, packed=packed, filler=SCAN)) == 7


def test_a_pdf_whose_pages_cannot_be_found_counts_one_per_50_kb() -> None:
    hidden = b"%PDF-1.7\n" + SCAN  # encrypted object streams: nothing to read
    assert pdf_pages(hidden) == len(hidden) // 50_000
    assert pdf_pages(b"%PDF-1.7\n%%EOF") == 1
    assert pdf_pages(b"not a pdf") == 0


def shapes(data: str) -> dict[str, dict[str, object]]:
    """The same base64 PDF in each provider's and framework's document block."""
    url = "data:application/pdf;base64," + data
    return {
        "anthropic": {
            "type": "document",
            "source": {"type": "base64", "media_type": "application/pdf", "data": data},
        },
        "openai chat": {"type": "file", "file": {"filename": "a.pdf", "file_data": url}},
        "openai responses": {"type": "input_file", "filename": "a.pdf", "file_data": url},
        "langchain": {"type": "file", "base64": data, "mime_type": "application/pdf"},
        "langchain 0.3": {"type": "file", "source_type": "base64", "data": data},
    }


@pytest.mark.parametrize("shape", list(shapes("")))
def test_every_document_block_counts_its_pages(shape: str) -> None:
    block = shapes(b64(pdf(10, packed=True, filler=SCAN)))[shape]
    assert file_chars(block) == 10 * PAGE_TOKENS * CHARS_PER_TOKEN


def test_a_scanned_pdf_is_estimated_by_its_pages_not_its_size() -> None:
    block = shapes(b64(pdf(10, packed=True, filler=SCAN)))["openai chat"]
    message = {"role": "user", "content": [{"type": "text", "text": "Summarise."}, block]}
    tokens = estimate_message_tokens([message])
    assert 10 * PAGE_TOKENS <= tokens < 10 * PAGE_TOKENS + 50  # it read as ~1,050,000


def test_a_langchain_message_with_a_pdf_counts_its_pages() -> None:
    block = shapes(b64(pdf(3, packed=True, filler=SCAN)))["langchain"]
    message = HumanMessage(content=[{"type": "text", "text": "Summarise."}, block])
    assert 3 * PAGE_TOKENS <= estimate_message_tokens([message]) < 3 * PAGE_TOKENS + 50


def test_a_dollar_cap_admits_the_call_a_scanned_pdf_makes() -> None:
    # 10 pages at gpt-4o's $2.50 per million: about $0.08 reserved, not $2.60.
    warden, _, _ = make_warden(Policy(limits=Limits(max_cost_usd=1.0)))
    run = warden.run()
    block = shapes(b64(pdf(10, filler=SCAN)))["openai chat"]
    step = run.before_llm_call("gpt-4o", [{"role": "user", "content": [block]}], max_tokens=500)
    assert step.reserved_usd < 0.1
    run.after_llm_call(step, Usage(input_tokens=25_000, output_tokens=400))


def test_text_documents_count_as_their_text() -> None:
    text = "A plain-text contract. " * 200
    anthropic = {"type": "document", "source": {"type": "text", "data": text}}
    assert file_chars(anthropic) == len(text)
    url = "data:text/plain;base64," + b64(text.encode())
    as_file = {"type": "file", "file": {"file_data": url}}
    assert file_chars(as_file) == len(text.encode())
    chunks = [{"type": "text", "text": "first chunk"}, {"type": "text", "text": "second"}]
    packed = {"type": "document", "source": {"type": "content", "content": chunks}}
    assert file_chars(packed) == len("first chunk") + len("second")


def test_a_reference_counts_as_its_text() -> None:
    by_id = {"type": "input_file", "file_id": "file-abc123"}
    by_url = {"type": "document", "source": {"type": "url", "url": "https://x.test/a.pdf"}}
    assert file_payload(by_id) is None and file_payload(by_url) is None
    assert 0 < file_chars(by_id) < 100 and 0 < file_chars(by_url) < 150


def test_data_that_is_not_base64_counts_as_its_text() -> None:
    block = {"type": "file", "base64": "not base64 at all!"}
    assert file_chars(block) == len("not base64 at all!")


# ---- audio ---------------------------------------------------------------------------


def wav(seconds: int, rate: int = 16_000) -> bytes:
    """``seconds`` of mono 16-bit silence at ``rate`` Hz, as a WAV file."""
    import io
    import wave

    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(b"\0\0" * rate * seconds)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "block",
    [
        lambda data: {"type": "input_audio", "input_audio": {"data": data, "format": "wav"}},
        lambda data: {"type": "audio", "base64": data, "mime_type": "audio/wav"},
        lambda data: {"type": "audio", "source_type": "base64", "data": data},
    ],
    ids=["openai", "langchain", "langchain 0.3"],
)
@pytest.mark.parametrize("rate", [8_000, 44_100])
def test_a_wav_counts_by_its_length(block: Any, rate: int) -> None:
    # A minute of WAV is 1-5 MB of base64: it read as 480,000 to 2.6 million tokens.
    content = [block(b64(wav(60, rate)))]
    assert estimate_message_tokens([{"role": "user", "content": content}]) == (
        60 * AUDIO_TOKENS_PER_SECOND + 4
    )


def test_compressed_audio_counts_at_128_kbits() -> None:
    mp3 = (b"ID3" + bytes(range(256)) * 1875)[:480_000]  # 30 s at 128 kbit/s
    assert audio_seconds(b64(mp3)) == pytest.approx(30, abs=0.01)
    block = {"type": "input_audio", "input_audio": {"data": b64(mp3), "format": "mp3"}}
    assert audio_chars(block) == 30 * AUDIO_TOKENS_PER_SECOND * CHARS_PER_TOKEN


def test_an_audio_reference_counts_as_its_text() -> None:
    block = {"type": "audio", "url": "https://x.test/call.mp3"}
    assert 0 < audio_chars(block) < 150
