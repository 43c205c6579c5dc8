"""A small reader for the unit files devbox writes: sections, keys, and labels back out.

It reads only what systemd's own parser would read the same way for our files:
`[Section]` headers, `Key=value` lines, `#`/`;` comments. Values that hold words
are split as systemd splits them, and `%%`/`$$` (doubled by render.systemd_word)
are turned back into `%`/`$`.
"""

from __future__ import annotations

import re

from devbox.names import LABEL_PREFIX

# The first line of every file devbox writes. install.py refuses to replace a file without it.
MARKER = "# Managed by devbox."

Sections = dict[str, list[tuple[str, str]]]

_ESCAPES = {
    "n": "\n",
    "t": "\t",
    "r": "\r",
    "\\": "\\",
    '"': '"',
    "'": "'",
    "s": " ",
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "v": "\v",
}


def is_ours(text: str) -> bool:
    return text.startswith(MARKER)


def parse_sections(text: str) -> Sections:
    sections: Sections = {}
    current: list[tuple[str, str]] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
        elif current is not None and "=" in line:
            key, _, value = line.partition("=")
            current.append((key.strip(), value.strip()))
    return sections


# systemd's numeric C escapes; Quadlet 5.8 writes a space inside ExecStart= quotes as \x20.
_NUMERIC_ESCAPE = re.compile(r"x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|[0-7]{3}")


def _numeric_escape(code: str) -> str:
    return chr(int(code, 8) if code[0].isdigit() else int(code[1:], 16))


def split_words(value: str) -> list[str]:
    """systemd's word splitting (quotes, C escapes), then `%%` -> `%` and `$$` -> `$`."""
    words: list[str] = []
    i, n = 0, len(value)
    while i < n:
        while i < n and value[i].isspace():
            i += 1
        if i >= n:
            break
        word: list[str] = []
        quote: str | None = None
        while i < n:
            ch = value[i]
            if quote is None and ch.isspace():
                break
            if quote is None and ch in "\"'":
                quote = ch
            elif quote is not None and ch == quote:
                quote = None
            elif ch == "\\" and i + 1 < n and (code := _NUMERIC_ESCAPE.match(value, i + 1)):
                word.append(_numeric_escape(code.group()))
                i = code.end() - 1
            elif ch == "\\" and i + 1 < n:
                i += 1
                word.append(_ESCAPES.get(value[i], value[i]))
            else:
                word.append(ch)
            i += 1
        if quote is not None:
            raise ValueError(f"unterminated quote in {value!r}")
        words.append("".join(word).replace("%%", "%").replace("$$", "$"))
    return words


def values(sections: Sections, section: str, key: str) -> list[str]:
    return [v for k, v in sections.get(section, []) if k == key]


def labels(text: str) -> dict[str, str]:
    """The io.devbox.* labels of a .container file."""
    found: dict[str, str] = {}
    for value in values(parse_sections(text), "Container", "Label"):
        for word in split_words(value):
            key, sep, label_value = word.partition("=")
            if sep and key.startswith(LABEL_PREFIX):
                found[key[len(LABEL_PREFIX) :]] = label_value
    return found


def image(text: str) -> str | None:
    found = values(parse_sections(text), "Container", "Image")
    return split_words(found[-1])[0] if found else None
