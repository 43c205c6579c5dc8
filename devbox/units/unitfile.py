"""The one reader for the unit files devbox writes: sections, keys, and labels back out.

A drone's labels decide what its broker may mint tokens for, so this reads a .container file
exactly as Podman's Quadlet generator (pkg/systemd/parser) reads it, and each word as systemd
then reads it from the ExecStart= Quadlet writes:

- lines end at "\\n" only (never at U+2028, U+0085, \\v, \\f...); each line is trimmed of Unicode
  white space (Go's strings.TrimSpace); a line that then ends in a backslash continues on the
  next (the backslash dropped, no space added; comment lines inside are skipped);
- `#` and `;` start a comment only at the start of a trimmed line;
- an empty `Key=` drops the values before it;
- a value is split into words at space, tab, CR and LF outside quotes, quotes are removed,
  C escapes decoded, an unbalanced quote runs to the end, an empty word ends the value
  (Quadlet's port of systemd's extract_first_word with RELAX|UNQUOTE|CUNESCAPE); a value with
  an unknown escape is dropped whole, as Quadlet does;
- systemd expands `%` specifiers and `$` variables in ExecStart=: `%%` and `$$` (what
  render.systemd_word writes) read back as `%` and `$`; any other `%` or `$`, whose meaning
  depends on the host, is refused.

What cannot be read that way raises UnitFileError; inventory reports that drone as damaged.
"""

from __future__ import annotations

from devbox.names import LABEL_PREFIX

# The first line of every file devbox writes. install.py refuses to replace a file without it.
MARKER = "# Managed by devbox."

Sections = dict[str, list[tuple[str, str]]]


class UnitFileError(ValueError):
    """A unit file, or a value in it, that cannot be read the way Quadlet and systemd read it."""


# Go's unicode.IsSpace: what strings.TrimSpace trims from both ends of every line.
_GO_SPACE = frozenset("\t\n\v\f\r \x85\xa0\u1680\u2028\u2029\u202f\u205f\u3000") | {
    chr(c) for c in range(0x2000, 0x200B)
}
_SEPARATORS = " \t\n\r"  # Quadlet's and systemd's WHITESPACE for word splitting
_SIMPLE_ESCAPES = {
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
    "\\": "\\",
    '"': '"',
    "'": "'",
    "s": " ",
}
_HEX = "0123456789abcdefABCDEF"


def is_ours(text: str) -> bool:
    return text.startswith(MARKER)


def _go_trim(line: str) -> str:
    start, end = 0, len(line)
    while start < end and line[start] in _GO_SPACE:
        start += 1
    while end > start and line[end - 1] in _GO_SPACE:
        end -= 1
    return line[start:end]


def _logical_lines(text: str) -> list[str]:
    """Quadlet's UnitFile.Parse: split at LF only, trim, join continuations, keep comments apart."""
    raw = text.removesuffix("\n").split("\n")
    lines: list[str] = []
    remaining = ""
    for number, physical in enumerate(raw):
        line = _go_trim(physical)
        if not line or line[0] in "#;":
            if remaining:
                continue  # a comment inside a continuation is skipped
        else:
            if line.endswith("\\"):
                line = line[:-1]
                if number != len(raw) - 1:
                    remaining += line
                    continue
            line, remaining = remaining + line, ""
        lines.append(line)
    return lines


def parse_sections(text: str) -> Sections:
    """Every `Key=value` per `[Section]`, values as Quadlet holds them (raw: not yet split into words)."""
    sections: Sections = {}
    current: list[tuple[str, str]] | None = None
    for number, line in enumerate(_logical_lines(text), 1):
        if not line or line[0] in "#;":
            continue
        end = line.find("]")
        if line[0] == "[" and end != -1 and not line[end + 1 :].strip(" \t"):
            name = line[1:end]
            if not name or "[" in name or any(ch < " " or "\x7f" <= ch <= "\x9f" for ch in name):
                raise UnitFileError(f"line {number}: invalid section name")
            current = sections.setdefault(name, [])
            continue
        key, sep, value = line.partition("=")
        if not sep or not key:
            raise UnitFileError(f"line {number}: not a key, a section or a comment")
        if current is None:
            raise UnitFileError(f"line {number}: a key before the first section")
        key = key.rstrip(" \t\n\v\f\r")
        if not key.isascii() or key[0] == " ":
            # Quadlet trims a key byte by byte; devbox writes only ASCII keys.
            raise UnitFileError(f"line {number}: invalid key name")
        current.append((key, value.lstrip(" \t\n\v\f\r")))
    return sections


def values(sections: Sections, section: str, key: str) -> list[str]:
    """Every value of KEY in SECTION; an empty one drops those before it (Quadlet's LookupAll)."""
    found: list[str] = []
    for k, v in sections.get(section, []):
        if k == key:
            found = found + [v] if v else []
    return found


def _unescape(value: str, i: int) -> tuple[str, int]:
    """The C escape after a backslash at VALUE[i - 1] -> (text, characters used); UnitFileError if unknown."""
    ch = value[i] if i < len(value) else ""
    if ch in _SIMPLE_ESCAPES:
        return _SIMPLE_ESCAPES[ch], 1
    digits = {"x": 2, "u": 4, "U": 8}.get(ch)
    if digits is not None:
        text = value[i + 1 : i + 1 + digits]
        if len(text) == digits and all(c in _HEX for c in text) and 0 < int(text, 16) <= 0x10FFFF:
            code = int(text, 16)
            return ("\ufffd" if 0xD800 <= code <= 0xDFFF else chr(code)), digits + 1  # Go writes U+FFFD for these
    elif ch and ch in "01234567":
        text = value[i : i + 3]
        if len(text) == 3 and all(c in "01234567" for c in text) and 0 < int(text, 8) <= 255:
            return chr(int(text, 8)), 3
    raise UnitFileError("an unknown escape sequence")


def _quadlet_words(value: str) -> list[str]:
    """extract_first_word with RELAX|UNQUOTE|CUNESCAPE, repeated (Quadlet's splitString)."""
    value = value.split("\x00", 1)[0]  # Quadlet's port ends a string at a NUL
    words: list[str] = []
    i, n = 0, len(value)
    while True:
        while i < n and value[i] in _SEPARATORS:
            i += 1
        if i >= n:
            return words
        word: list[str] = []
        quote = ""
        while i < n:
            ch = value[i]
            if ch == "\\":
                if i + 1 >= n:
                    i = n  # RELAX: a trailing backslash is eaten
                    break
                text, used = _unescape(value, i + 1)
                word.append(text)
                i += 1 + used
                continue
            if quote:
                if ch == quote:
                    quote = ""
                else:
                    word.append(ch)
            elif ch in "\"'":
                quote = ch
            elif ch in _SEPARATORS:
                break
            else:
                word.append(ch)
            i += 1
        if not word:
            return words  # an empty word ("") ends the value: Quadlet drops the words after it
        words.append("".join(word))


def _systemd_expand(word: str) -> str:
    """`%%` -> `%` and `$$` -> `$`, as systemd reads ExecStart=; any other `%` or `$` is refused."""
    out: list[str] = []
    i = 0
    while i < len(word):
        ch = word[i]
        if ch in "%$":
            if word[i + 1 : i + 2] != ch:
                raise UnitFileError(f"a {ch!r} systemd would expand")
            i += 1
        elif ch == "\x80":  # Quadlet writes it as \x80, which systemd reads as a lone byte
            raise UnitFileError("a character Quadlet passes on as another")
        out.append(ch)
        i += 1
    return "".join(out)


def split_words(value: str, *, keep_specifiers: bool = False) -> list[str]:
    """The words Podman gets for one value: Quadlet's splitting, then systemd's `%%`/`$$`.

    UnitFileError when Quadlet would drop the value (an unknown escape) or systemd would
    expand a specifier or variable in it. KEEP_SPECIFIERS reads an ExecStart= Quadlet wrote
    (`%N`, `%t`) the way a person does, without expanding: for tests and messages only.
    """
    words = _quadlet_words(value)
    if keep_specifiers:
        return [w.replace("%%", "%").replace("$$", "$") for w in words]
    return [_systemd_expand(w) for w in words]


def key_values(sections: Sections, section: str, key: str) -> dict[str, str | None]:
    """`Label=`/`Environment=` as Quadlet reads them (LookupAllKeyVal): the last value of a name wins.

    A value Quadlet drops (an unknown escape) is dropped here too; a specifier or variable
    systemd would expand is refused (UnitFileError).
    """
    found: dict[str, str | None] = {}
    for value in values(sections, section, key):
        try:
            words = _quadlet_words(value)
        except UnitFileError:
            continue  # Quadlet skips the whole value
        for word in words:
            name, sep, item = word.partition("=")
            found[_systemd_expand(name)] = _systemd_expand(item) if sep else None
    return found


def labels(text: str) -> dict[str, str]:
    """The io.devbox.* labels of a .container file, as Podman gets them (UnitFileError if unsure)."""
    found = key_values(parse_sections(text), "Container", "Label")
    return {k[len(LABEL_PREFIX) :]: v or "" for k, v in found.items() if k.startswith(LABEL_PREFIX)}


def image(text: str) -> str | None:
    found = values(parse_sections(text), "Container", "Image")
    words = _quadlet_words(found[-1]) if found else []
    return words[0] if words else None


def volume_sources(text: str) -> list[str]:
    """The source of every Volume= of a .container file: a host path or a named volume."""
    sources = []
    for value in values(parse_sections(text), "Container", "Volume"):
        words = _quadlet_words(value)
        if words:
            sources.append(words[0].split(":", 1)[0])
    return sources
