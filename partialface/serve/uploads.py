"""A request's inputs: images as multipart file fields, or as base64 strings in a JSON object; never a URL or a
server path (a string is only ever decoded as base64 bytes). Options are checked here, each error one line that
names the field."""

from __future__ import annotations

import base64
import binascii
import json
import math
import unicodedata
from dataclasses import dataclass, field
from typing import Any

from partialface.serve.problems import Problem

#: the longest name a subject may have
MAX_NAME = 200


@dataclass
class Inputs:
    """``files``: field -> [(label, bytes)]; ``fields``: field -> text."""

    files: dict[str, list[tuple[str, bytes]]] = field(default_factory=dict)
    fields: dict[str, str] = field(default_factory=dict)

    def image(self, name: str) -> bytes:
        """The one image of field ``name``."""
        got = self.files.get(name, [])
        if not got:
            if name in self.fields:
                raise Problem(422, f"{name}: send the image itself (a file field, or base64 in JSON), not text; the "
                              "service never opens paths or URLs", "missing-image")
            others = sorted(set(self.files) | set(self.fields))
            raise Problem(422, f"{name}: missing; send the photo as the field '{name}'" +
                          (f" (got: {', '.join(others)})" if others else ""), "missing-field")
        if len(got) > 1:
            raise Problem(422, f"{name}: one image expected, got {len(got)}", "too-many-images")
        return got[0][1]

    def images(self, name: str) -> list[tuple[str, bytes]]:
        """The images of field ``name`` (one or more), each labelled ``name[i]``."""
        got = self.files.get(name, [])
        if not got:
            self.image(name)  # the same one-line error as a missing single image
        return [(f"{name}[{i}]", data) for i, (_, data) in enumerate(got)]


async def read_inputs(request: Any, image_fields: tuple[str, ...]) -> Inputs:
    """The images and options of ``request``: multipart/form-data, or application/json whose ``image_fields``
    hold base64 strings (a list of them for a multi-image field; a ``data:...;base64,`` prefix is allowed)."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    out = Inputs()
    if ctype == "multipart/form-data":
        form = await request.form(max_files=1000, max_fields=100)
        try:
            for key, value in form.multi_items():
                if hasattr(value, "read"):
                    out.files.setdefault(key, []).append((key, await value.read()))
                else:
                    out.fields[key] = str(value)
        finally:
            await form.close()
        return out
    if ctype == "application/json":
        try:
            doc = json.loads(await request.body())
        except (ValueError, UnicodeDecodeError):
            raise Problem(400, "body: not valid JSON (send an object of fields, images as base64 strings)",
                          "bad-json") from None
        if not isinstance(doc, dict):
            raise Problem(400, "body: a JSON object of fields expected", "bad-json")
        for key, value in doc.items():
            if key in image_fields:
                values = value if isinstance(value, list) else [value]
                out.files[key] = [(key, _b64(key, v)) for v in values]
            elif isinstance(value, (str, int, float, bool)):
                out.fields[key] = str(value).lower() if isinstance(value, bool) else str(value)
            else:
                raise Problem(422, f"{key}: a number, text or true/false expected", "bad-field")
        return out
    raise Problem(415, "body: send multipart/form-data (file fields) or application/json (base64 images)",
                  "unsupported-media-type")


def _b64(key: str, value: Any) -> bytes:
    if not isinstance(value, str):
        raise Problem(422, f"{key}: a base64 string expected", "bad-field")
    text = value.split(",", 1)[1] if value.startswith("data:") and "," in value else value
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise Problem(422, f"{key}: not base64 (send the image's bytes base64-encoded; the service never fetches "
                      "URLs or opens paths)", "bad-base64") from None


def number(inputs: Inputs, key: str, default: float | None, low: float, high: float, what: str) -> float | None:
    """A float option in the open interval (low, high), or ``default`` when absent."""
    text = inputs.fields.get(key)
    if text is None or text == "":
        return default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and low < value < high):
        raise Problem(422, f"{key}: {text[:40]!r} is not {what}", "bad-field")
    return value


def integer(inputs: Inputs, key: str, default: int, low: int, high: int) -> int:
    text = inputs.fields.get(key)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise Problem(422, f"{key}: {text[:40]!r} is not a whole number (give {low}..{high})", "bad-field") from None
    if not low <= value <= high:
        raise Problem(422, f"{key}: {value} is out of range (give {low}..{high})", "bad-field")
    return value


def boolean(inputs: Inputs, key: str, default: bool) -> bool:
    text = inputs.fields.get(key)
    if text is None or text == "":
        return default
    low = text.strip().lower()
    if low in ("true", "1", "yes", "on"):
        return True
    if low in ("false", "0", "no", "off"):
        return False
    raise Problem(422, f"{key}: {text[:40]!r} is not true or false", "bad-field")


def choice(inputs: Inputs, key: str, default: str, choices: tuple[str, ...]) -> str:
    value = inputs.fields.get(key) or default
    if value not in choices:
        raise Problem(422, f"{key}: {value[:40]!r} is not one of {', '.join(choices)}", "bad-field")
    return value


def check_name(name: str) -> str:
    """A subject's name as given, or a 422: empty, over :data:`MAX_NAME` characters, a ``/`` or ``\\``, control
    characters, leading or trailing space, or ``.`` / ``..`` (which no URL can carry) are refused; anything else
    (quotes, SQL, any script) is stored verbatim and only ever passed to SQLite as a parameter."""
    if not name or not name.strip():
        raise Problem(422, "name: empty; give the person's name", "bad-name")
    if len(name) > MAX_NAME:
        raise Problem(422, f"name: {len(name)} characters; at most {MAX_NAME}", "bad-name")
    if "/" in name or "\\" in name:
        raise Problem(422, "name: no '/' or '\\' in a name", "bad-name")
    if any(unicodedata.category(ch) in ("Cc", "Cs", "Zl", "Zp") for ch in name):
        raise Problem(422, "name: control characters are not allowed in a name", "bad-name")
    if name != name.strip():
        raise Problem(422, "name: no leading or trailing space", "bad-name")
    if name in (".", ".."):
        raise Problem(422, f"name: {name!r} cannot be addressed in a URL; choose another", "bad-name")
    return name
