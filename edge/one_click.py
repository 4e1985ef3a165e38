"""The body of an RFC 8058 one-click unsubscribe: does this POST ask for it?

RFC 8058 §3.2: the POST's body holds ``List-Unsubscribe=One-Click``, sent as ``multipart/form-data``
(SHOULD) or ``application/x-www-form-urlencoded`` (MAY). Both are taken, other fields beside it too. A body
of any other type is read as urlencoded: ``List-Unsubscribe=One-Click`` in plain text says the same, and a
mail provider that gets the type wrong should not leave a recipient subscribed.

Pure: no framework, so it is tested alone. The edge reads at most ``MAX_BODY`` bytes of such a body.
"""

from __future__ import annotations

from email.message import Message
from email.parser import BytesParser
from urllib.parse import parse_qsl

MAX_BODY = 4096  # what mail providers send is some 30 to 300 bytes
FIELD = "List-Unsubscribe"
VALUE = "One-Click"
_MULTIPART = "multipart/form-data"


def requested(body: bytes, content_type: str) -> bool:
    """Whether ``body`` (of ``content_type``, as its header says) carries List-Unsubscribe=One-Click."""
    media_type = content_type.partition(";")[0].strip().lower()
    if media_type == _MULTIPART:
        return _in_multipart(body, content_type)
    text = body.decode("utf-8", "replace")
    return any(name == FIELD and value.strip() == VALUE for name, value in parse_qsl(text, keep_blank_values=True))


def _in_multipart(body: bytes, content_type: str) -> bool:
    # The stdlib's MIME parser reads form-data (RFC 7578 is MIME): quoted boundaries and parameters, a
    # preamble, folded header lines. The header bytes came off the wire; surrogateescape gives them back.
    head = b"Content-Type: " + content_type.encode("utf-8", "surrogateescape") + b"\r\n\r\n"
    form = BytesParser().parsebytes(head + body)
    if not form.is_multipart():
        return False  # no boundary, or none found
    for part in form.get_payload():
        if isinstance(part, Message) and part.get_param("name", header="content-disposition") == FIELD:
            value = part.get_payload(decode=True)
            if isinstance(value, bytes) and value.strip() == VALUE.encode():
                return True
    return False
