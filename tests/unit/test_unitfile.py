from __future__ import annotations

import pytest

from devbox.units.render import systemd_word
from devbox.units.unitfile import image, is_ours, labels, parse_sections, split_words
from tests.unit.cases import HOSTILE_ENV

# Not "": Quadlet ends a value at an empty word, so systemd_word refuses it (test below).
SAMPLES = [*(v for v in HOSTILE_ENV.values() if v), "plain", "a=b", "%", "$", "\\", '"', "'", "a'b\"c", "-x", "ünï"]


@pytest.mark.parametrize("value", SAMPLES)
def test_systemd_word_round_trips_as_exactly_one_word(value: str) -> None:
    assert split_words(systemd_word(value)) == [value]


def test_several_words() -> None:
    line = " ".join(systemd_word(v) for v in SAMPLES)
    assert split_words(line) == SAMPLES


def test_doubling_of_specifiers_and_variables() -> None:
    assert systemd_word("%h") == "%%h"
    assert systemd_word("$HOME") == "$$HOME"
    assert systemd_word("a b") == '"a b"'


def test_numeric_c_escapes_as_systemd_reads_them() -> None:
    """Quadlet 5.8 writes `"a;\\x20rm"` in ExecStart=, where 5.4 wrote `"a; rm"`."""
    assert split_words('"a;\\x20rm" \\101\\u00fc\\U0001F600 "C:\\\\x20"') == ["a; rm", "Aü\U0001f600", "C:\\x20"]


def test_an_empty_word_is_refused_when_written() -> None:
    with pytest.raises(ValueError):
        systemd_word("")


def test_an_unterminated_quote_runs_to_the_end_as_in_quadlet() -> None:
    # The old reader raised, and one hand-edited unit made every list and broker fail.
    assert split_words('"abc d') == ["abc d"]


def test_labels_and_image_read_back() -> None:
    text = (
        "# Managed by devbox. x\n[Unit]\nDescription=a\n[Container]\nImage=localhost/x:1\n"
        'Label=io.devbox.drone=demo\nLabel="io.devbox.note=a b" other.label=1\n; comment\n# Label=io.devbox.fake=1\n'
    )
    assert is_ours(text)
    assert labels(text) == {"drone": "demo", "note": "a b"}
    assert image(text) == "localhost/x:1"
    assert parse_sections(text)["Unit"] == [("Description", "a")]
    assert not is_ours("[Unit]\n")
