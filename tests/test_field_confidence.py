"""Per-field confidence of JSON answers: hand-computed cases, properties, and the real model."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from observability import FieldConfidence, extract_token_logprobs, score_confidence
from observability.core.fields import field_confidence
from observability.core.score import LOGPROB_FLOOR
from observability.core.types import TokenLogprob
from observability.demo.model_server import MODEL_NAME
from tests.conftest import raw_chat_completion, raw_chat_stream
from tests.fuzzing import fuzz
from tests.test_core_extract import seed_korean_payload


def tok(piece: str | bytes, logprob: float = -0.5, alternatives: Sequence[tuple[str, float]] = ()) -> TokenLogprob:
    """A token from its text or raw bytes (a byte piece may hold part of a character)."""
    raw = piece if isinstance(piece, bytes) else piece.encode()
    return TokenLogprob(token=raw.decode("utf-8", "replace"), bytes=raw, logprob=logprob,
                        top_logprobs=tuple(alternatives))


def tokens_of(*pieces: str | bytes) -> list[TokenLogprob]:
    """Tokens with logprobs -0.1, -0.2, ... so that every sum names the tokens in it."""
    return [tok(piece, -0.1 * (i + 1)) for i, piece in enumerate(pieces)]


def text_of(tokens: Sequence[TokenLogprob]) -> str:
    return b"".join(t.bytes or b"" for t in tokens).decode()


def spans(fields: Sequence[FieldConfidence], text: str) -> list[tuple[str, str]]:
    return [(f.path, text[f.start:f.end]) for f in fields]


def lp_sum(*indices: int) -> float:
    """The sum ``tokens_of`` gives the tokens at these indices, added in order."""
    total = 0.0
    for i in indices:
        total += -0.1 * (i + 1)
    return total


# --- hand-computed cases ----------------------------------------------------------------------

def test_object_with_string_number_and_boolean() -> None:
    #            0      1      2     3     4      5     6     7      8     9      10
    tokens = tokens_of('{"', "name", '":', ' "', "Ann", '",', ' "', "ok", '":', " true", "}")
    text = text_of(tokens)
    assert text == '{"name": "Ann", "ok": true}'
    name, ok = field_confidence(tokens)
    # "Ann" with its quotes is text[9:14]: ' "' holds the opening quote, '",' the closing one.
    assert (name.path, name.start, name.end, name.token_count) == ("/name", 9, 14, 3)
    assert name.sequence_logprob == pytest.approx(lp_sum(3, 4, 5), abs=1e-12)
    assert name.mean_logprob == pytest.approx(lp_sum(3, 4, 5) / 3, abs=1e-12)
    assert name.min_token_probability == pytest.approx(math.exp(-0.6), abs=1e-12)
    assert (ok.path, ok.start, ok.end, ok.token_count) == ("/ok", 22, 26, 1)
    assert ok.sequence_logprob == pytest.approx(-1.0, abs=1e-12)


def test_value_whose_last_token_also_holds_the_next_character() -> None:
    # `31,` ends the number and begins the separator: it belongs to the value all the same.
    tokens = tokens_of('{"', "age", '":', " 3", "1,", ' "', "b", '":', " 7", "}")
    text = text_of(tokens)
    age, b = field_confidence(tokens)
    assert spans((age, b), text) == [("/age", "31"), ("/b", "7")]
    assert age.token_count == 2 and age.sequence_logprob == pytest.approx(lp_sum(3, 4), abs=1e-12)
    assert b.token_count == 1 and b.sequence_logprob == pytest.approx(lp_sum(8), abs=1e-12)


def test_one_token_across_two_values_counts_for_both() -> None:
    tokens = tokens_of("[", "1,2", "]")
    first, second = field_confidence(tokens)
    assert (first.path, first.start, first.end, second.path, second.start, second.end) == ("/0", 1, 2, "/1", 3, 4)
    assert first.sequence_logprob == second.sequence_logprob == pytest.approx(-0.2, abs=1e-12)


def test_escapes_inside_strings_use_raw_offsets() -> None:
    raw = r'{"q": "a\"b\\c\u00e9\/", "k\"ey": 1}'
    tokens = tokens_of('{"q": "a', '\\', '"b', "\\\\", "c\\u00", 'e9\\/"', ", ", '"k\\"ey": 1}')
    assert text_of(tokens) == raw
    q, key = field_confidence(tokens)
    assert spans((q, key), raw) == [("/q", r'"a\"b\\c\u00e9\/"'), ('/k"ey', "1")]
    assert json.loads(raw[q.start:q.end]) == 'a"b\\cé/'
    assert (q.start, q.end, q.token_count) == (6, 23, 6)
    assert q.sequence_logprob == pytest.approx(lp_sum(0, 1, 2, 3, 4, 5), abs=1e-12)
    assert key.token_count == 1


def test_numbers_with_exponents_signs_and_fractions() -> None:
    raw = "[1.5e-3, -0, 2E+10, -12.25e4, 0.0]"
    fields = field_confidence(tokens_of(*raw))  # one character per token
    assert spans(fields, raw) == [("/0", "1.5e-3"), ("/1", "-0"), ("/2", "2E+10"), ("/3", "-12.25e4"), ("/4", "0.0")]
    assert [f.token_count for f in fields] == [6, 2, 5, 8, 3]


def test_nested_arrays_objects_and_paths() -> None:
    raw = '{"a": [[1, [2]], [], {}, {"b": [null, false]}], "c": {"d": {"e": "x"}}}'
    fields = field_confidence(tokens_of(raw))
    assert spans(fields, raw) == [
        ("/a/0/0", "1"), ("/a/0/1/0", "2"), ("/a/3/b/0", "null"), ("/a/3/b/1", "false"), ("/c/d/e", '"x"')]


def test_keys_with_tilde_slash_and_empty_are_escaped_per_rfc_6901() -> None:
    raw = '{"a/b": {"c~d": 1, "~1": 2, "": 3}, "x\\u002fy": 4}'
    fields = field_confidence(tokens_of(raw))
    assert [f.path for f in fields] == ["/a~1b/c~0d", "/a~1b/~01", "/a~1b/", "/x~1y"]


@pytest.mark.parametrize("raw", ["{}", "[]", '{"a": {}, "b": []}', "[[], [{}]]", " \n{ } "])
def test_empty_objects_and_arrays_have_no_leaves(raw: str) -> None:
    assert field_confidence(tokens_of(raw)) == ()


def test_whitespace_everywhere_is_skipped() -> None:
    raw = '\n\t{\n  "a" :\t[ 1 ,\r\n 2 ] ,\n  "b"  :  "s"\n}\n'
    fields = field_confidence(tokens_of(*raw))
    assert spans(fields, raw) == [("/a/0", "1"), ("/a/1", "2"), ("/b", '"s"')]


def test_answer_wrapped_in_a_markdown_fence() -> None:
    raw = 'Here it is:\n```json\n{"label": "spam", "score": 0.9}\n```\nAnything else?'
    tokens = tokens_of("Here it is:\n", "```", "json\n", '{"', "label", '":', ' "', "sp", "am", '",', ' "',
                       "score", '":', " 0", ".9", "}\n", "```", "\nAnything else?")
    assert text_of(tokens) == raw
    label, score = field_confidence(tokens)
    assert spans((label, score), raw) == [("/label", '"spam"'), ("/score", "0.9")]
    assert label.start == raw.index('"spam"') and label.token_count == 4
    assert score.sequence_logprob == pytest.approx(lp_sum(13, 14), abs=1e-12)


def test_first_json_fence_is_used_and_a_bare_fence_works() -> None:
    raw = "```python\nprint(1)\n```\nthen\n```\n[true]\n```"
    assert spans(field_confidence(tokens_of(raw)), raw) == [("/0", "true")]


@pytest.mark.parametrize(("raw", "complete"), [
    ('{"a": "x", "b": "unfinish', [("/a", '"x"')]),
    ('{"a": 12', []),                      # the number may have been cut: 12 could be 123
    ('{"a": [1, 2', [("/a/0", "1")]),
    ('{"a": [1, 2 ', [("/a/0", "1"), ("/a/1", "2")]),
    ('{"a": tr', []),
    ('{"a": true', [("/a", "true")]),
    ('{"a": "x\\', []),
    ('{"a": 1.5e', []),
    ('{"a": -', []),
    ('{"a": 1, "b', [("/a", "1")]),
    ('{"a": 1, "b": ', [("/a", "1")]),
    ('```json\n{"a": [null, "y"', [("/a/0", "null"), ("/a/1", '"y"')]),
])
def test_answer_cut_by_max_tokens_gives_its_complete_leaves(raw: str, complete: list[tuple[str, str]]) -> None:
    assert spans(field_confidence(tokens_of(raw)), raw) == complete


@pytest.mark.parametrize(("raw", "complete"), [
    ('{"a": 1, oops}', [("/a", "1")]),     # stops where the text stops being JSON
    ('{"a": 01}', []),
    ('[1] and more words', [("/0", "1")]),  # text after the complete value is ignored
    ('{"a": nul}', []),
])
def test_text_that_stops_being_json(raw: str, complete: list[tuple[str, str]]) -> None:
    assert spans(field_confidence(tokens_of(raw)), raw) == complete


@pytest.mark.parametrize("raw", [
    "", "   ", "The capital of Korea is Seoul.", '"yes"', "42", "true", 'Answer: {"a": 1}',
    "```\nplain code\n```", "```json\n```",
])
def test_not_json_gives_nothing(raw: str) -> None:
    assert field_confidence(tokens_of(raw) if raw else []) == ()


def test_cross_check_with_json_loads() -> None:
    doc = {"name": "Zoë \"Z\" \\ 😀", "n": [1, -2.5e-8, 3e+20], "deep": [[{"k/~": None}]], "t": [True, False]}
    raw = json.dumps(doc, indent=2)
    leaves = [(f.path, json.loads(raw[f.start:f.end])) for f in field_confidence(tokens_of(*raw))]
    assert leaves == [("/name", "Zoë \"Z\" \\ 😀"), ("/n/0", 1), ("/n/1", -2.5e-8), ("/n/2", 3e20),
                      ("/deep/0/0/k~1~0", None), ("/t/0", True), ("/t/1", False)]


def test_deep_nesting_does_not_recurse() -> None:
    raw = "[" * 5000 + "1" + "]" * 5000
    (leaf,) = field_confidence([tok(raw)])
    assert leaf.path == "/0" * 5000 and (leaf.start, leaf.end) == (5000, 5001)


# --- Korean: characters split into UTF-8 byte pieces (seed 004) -------------------------------

def korean_seed_tokens() -> list[TokenLogprob]:
    """'대한민국의 수도는 서울입니다.' as the seed's 15 tokens, 민, 국 and 울 in byte pieces."""
    return list(extract_token_logprobs(seed_korean_payload()))


def test_korean_seed_inside_a_string_value() -> None:
    seed = korean_seed_tokens()
    assert [t.bytes for t in seed[2:6]] == [b"\xeb\xaf", b"\xbc", b"\xea\xb5", b"\xad"]
    tokens = [tok('{"answer": "', -0.25), *seed, tok('"}', -0.125)]
    text = text_of(tokens)
    (answer,) = field_confidence(tokens)
    assert text[answer.start:answer.end] == '"대한민국의 수도는 서울입니다."'
    assert (answer.start, answer.end, answer.token_count) == (11, 29, 17)
    expected = -0.25
    for t in seed:
        expected += t.logprob
    expected += -0.125
    assert answer.sequence_logprob == pytest.approx(expected, abs=1e-12)


def test_token_holding_part_of_a_character_covers_that_whole_character() -> None:
    # The seed's pieces regrouped so that one token ends 민 (of /a) and begins 국 (of /b).
    seed = korean_seed_tokens()
    lp = [t.logprob for t in seed]
    tokens = [tok('{"a": "', -1.0), tok("대", lp[0]), tok("한", lp[1]), tok(b"\xeb\xaf", lp[2]),
              tok(b'\xbc", "b": "\xea\xb5', -2.0), tok(b"\xad", lp[5]), tok('의"}', -3.0)]
    text = text_of(tokens)
    a, b = field_confidence(tokens)
    assert spans((a, b), text) == [("/a", '"대한민"'), ("/b", '"국의"')]
    assert a.token_count == 5 and b.token_count == 3
    assert a.sequence_logprob == pytest.approx(-1.0 + lp[0] + lp[1] + lp[2] - 2.0, abs=1e-12)
    assert b.sequence_logprob == pytest.approx(-2.0 + lp[5] - 3.0, abs=1e-12)


# --- logprobs read as score_confidence reads them ---------------------------------------------

def test_nan_and_positive_logprobs_are_skipped_and_minus_infinity_floored() -> None:
    tokens = [tok('{"a": ', -0.5), tok("1", math.nan), tok("2", -math.inf), tok("3", 5e-5), tok("4", 0.5),
              tok(', "b": ', -0.5), tok("7", math.nan), tok("}", -0.5)]
    a, b = field_confidence(tokens)
    assert (a.path, a.token_count, a.sequence_logprob, a.min_token_probability) == ("/a", 2, LOGPROB_FLOOR, 0.0)
    assert a.mean_logprob == LOGPROB_FLOOR / 2
    # Only a NaN token overlaps /b: nothing to compute, None rather than NaN.
    assert (b.token_count, b.sequence_logprob, b.mean_logprob, b.min_token_probability) == (0, None, None, None)


# --- alternatives: the label distribution -------------------------------------------------------

def labels(field: FieldConfidence) -> tuple[list[str | None], list[float]]:
    return [text for text, _ in field.alternatives], [p for _, p in field.alternatives]


def test_alternatives_are_the_first_content_tokens_top_logprobs() -> None:
    yes_no = [("yes", math.log(0.7)), ("no", math.log(0.2)), ("maybe", math.nan), ("!", 0.5)]
    tokens = [tok('{"spam": "', -0.1, [('{"spam": "', -0.1)]), tok("yes", math.log(0.7), yes_no),
              tok('", "ok": ', -0.1), tok("false", -0.3, [("false", -0.3), ("true", -1.4)]), tok("}", -0.1)]
    spam, ok = field_confidence(tokens)
    assert labels(spam)[0] == ["yes", "no"]
    assert labels(spam)[1] == pytest.approx([0.7, 0.2])
    assert labels(ok)[0] == ["false", "true"]
    assert labels(ok)[1] == pytest.approx([math.exp(-0.3), math.exp(-1.4)])


def test_alternatives_of_an_empty_string_are_those_of_its_closing_quote() -> None:
    tokens = [tok('["', -0.1, [("x", -0.1)]), tok('"]', -0.2, [('"]', -0.2), ("a", -3.0)])]
    (empty,) = field_confidence(tokens)
    assert labels(empty)[0] == ['"]', "a"]
    assert labels(empty)[1] == pytest.approx([math.exp(-0.2), math.exp(-3.0)])


def test_a_json_answer_is_scored_from_the_columns_without_a_token_object(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 25 item 6: the alternatives a field reports come from the reading pass's columns; no
    ``TokenLogprob`` is built per reported field (that was most of a JSON answer's extra cost)."""
    import observability.core.extract as extract_module

    entries = [{"token": piece, "bytes": list(piece.encode()), "logprob": -0.05 * (i + 1),
                "top_logprobs": [{"token": piece, "logprob": -0.05 * (i + 1)}, {"token": "x", "logprob": -4.0}]}
               for i, piece in enumerate(['{"', "name", '":', ' "', "Ada", '",', ' "', "age", '":', " 36", "}"])]
    tokens = extract_token_logprobs({"content": entries, "refusal": None})
    built: list[object] = []
    monkeypatch.setattr(extract_module, "_entry", lambda entry: built.append(entry))
    name, age = score_confidence(tokens).fields
    assert built == []
    assert labels(name) == (["Ada", "x"], [math.exp(-0.25), math.exp(-4.0)])
    assert labels(age) == ([" 36", "x"], [math.exp(-0.5), math.exp(-4.0)])


def test_field_confidence_is_a_frozen_slotted_dataclass() -> None:
    (leaf,) = field_confidence(tokens_of("[1 ]"))
    assert not hasattr(leaf, "__dict__")
    with pytest.raises(dataclasses.FrozenInstanceError):
        leaf.start = 3  # type: ignore[misc]
    assert leaf == FieldConfidence(path="/0", start=1, end=2, token_count=1, sequence_logprob=-0.1,
                                   mean_logprob=-0.1, min_token_probability=math.exp(-0.1))


# --- properties: random documents cut into random byte pieces --------------------------------

def leaves_of(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """The leaves of a parsed document with their JSON Pointers, in document order (independent
    of the scanner: walks Python objects)."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from leaves_of(item, f"{path}/{key.replace('~', '~0').replace('/', '~1')}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from leaves_of(item, f"{path}/{index}")
    else:
        yield path, value


text_values = st.text(st.characters(exclude_categories=["Cs"]), max_size=8)
json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12),
                      st.floats(allow_nan=False, allow_infinity=False), text_values,
                      st.sampled_from(["서울", "😀", 'a"b\\c', "~/", "\n\t\u2028"]))
json_documents = st.one_of(
    st.lists(st.recursive(json_leaf, lambda inner: st.lists(inner, max_size=3)
                          | st.dictionaries(text_values, inner, max_size=3), max_leaves=12), max_size=4),
    st.dictionaries(text_values, st.recursive(json_leaf, lambda inner: st.lists(inner, max_size=3)
                                              | st.dictionaries(text_values, inner, max_size=3),
                                              max_leaves=12), max_size=4),
)
logprobs = st.one_of(st.floats(-30.0, 0.0), st.sampled_from([-math.inf, math.nan, 0.0, 3e-5, 0.7]))


@st.composite
def tokenised_answers(draw: st.DrawFn) -> tuple[Any, str, bool, list[TokenLogprob]]:
    """A random document, serialised in a random style, maybe fenced, cut at random byte
    positions into tokens with random logprobs and alternatives."""
    doc = draw(json_documents)
    ascii_only = draw(st.booleans())
    indent = draw(st.sampled_from([None, 0, 2, "\t"]))
    separators = draw(st.sampled_from([(",", ":"), (", ", ": "), (" ,", " :  ")]))
    body = json.dumps(doc, ensure_ascii=ascii_only, indent=indent, separators=separators)
    text = draw(st.sampled_from(["{}", " \n{}\n", "```json\n{}\n```", "Sure:\n```\n{}\n```\nBye"])).replace("{}", body)
    raw = text.encode()
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(raw) - 1)), max_size=len(raw) // 2)))
    pieces = [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True) if a < b]
    tokens = [tok(piece, draw(logprobs), draw(st.lists(st.tuples(st.sampled_from(["a", "é", ""]), logprobs),
                                                        max_size=2)))
              for piece in pieces]
    return doc, text, ascii_only, tokens


def expected_figures(tokens: Sequence[TokenLogprob], text: str, start: int, end: int,
                     content: int) -> tuple[int, float | None, float | None, tuple[tuple[str | None, float], ...]]:
    """Token count, sum, min probability and alternatives of a value computed on bytes: a token
    counts when its bytes overlap the value's bytes (independent of token_offsets)."""
    begin, finish = len(text[:start].encode()), len(text[:end].encode())
    first_byte = len(text[:content].encode())
    n, total, min_p = 0, 0.0, 1.0
    alternatives: tuple[tuple[str | None, float], ...] | None = None
    position = 0
    for t in tokens:
        size = len(t.bytes or b"")
        if alternatives is None and position <= first_byte < position + size:
            alternatives = tuple((a, math.exp(min(lp, 0.0))) for a, lp in t.top_logprobs if lp <= 1e-4)
        if size and position < finish and position + size > begin and t.logprob <= 1e-4:
            lp = min(t.logprob, 0.0)
            n += 1
            total += max(lp, LOGPROB_FLOOR)
            min_p = min(min_p, math.exp(lp))
        position += size
    return n, total if n else None, min_p if n else None, alternatives or ()


@fuzz(150)
@given(tokenised_answers())
def test_every_leaf_is_found_with_its_span_and_figures(answer: tuple[Any, str, bool, list[TokenLogprob]]) -> None:
    doc, text, ascii_only, tokens = answer
    fields = field_confidence(tokens)
    expected = list(leaves_of(doc))
    assert [f.path for f in fields] == [path for path, _ in expected]
    for field, (_, value) in zip(fields, expected, strict=True):
        assert text[field.start:field.end] == json.dumps(value, ensure_ascii=ascii_only)
        content = field.start + 1 if isinstance(value, str) else field.start
        n, total, min_p, alternatives = expected_figures(tokens, text, field.start, field.end, content)
        assert field.token_count == n
        assert (field.sequence_logprob is None) == (total is None)
        if total is not None and field.sequence_logprob is not None and field.mean_logprob is not None:
            assert field.sequence_logprob == pytest.approx(total, abs=1e-9)
            assert field.mean_logprob == pytest.approx(total / n, abs=1e-9)
            assert field.min_token_probability == pytest.approx(min_p, abs=1e-12)
        assert field.alternatives == alternatives
    assert all(a.end <= b.start for a, b in itertools.pairwise(fields))


@fuzz(100)
@given(tokenised_answers(), st.data())
def test_a_cut_answer_gives_the_complete_leaves_of_the_whole(
        answer: tuple[Any, str, bool, list[TokenLogprob]], data: st.DataObject) -> None:
    _, _, _, tokens = answer
    whole = field_confidence(tokens)
    kept = data.draw(st.integers(0, len(tokens)))
    cut_text = b"".join(t.bytes or b"" for t in tokens[:kept]).decode("utf-8", "replace")
    full_text = text_of(tokens)

    def complete(f: FieldConfidence) -> bool:
        """Inside the cut text; a number must be followed by something (it may go on)."""
        return f.end < len(cut_text) or (f.end == len(cut_text) and full_text[f.start] in '"tfn')

    assert field_confidence(tokens[:kept]) == tuple(f for f in whole if complete(f))


@fuzz(100)
@given(st.text(max_size=40).filter(lambda s: not s.lstrip(" \t\n\r").startswith(("{", "[")) and "```" not in s))
def test_text_that_does_not_open_with_an_object_or_array_gives_nothing(text: str) -> None:
    tokens = [tok(text.encode("utf-8", "surrogatepass"))] if text else []
    assert field_confidence(tokens) == ()


# --- the real model: llama.cpp's json_schema answers, checked against the raw response ----------

PERSON_SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 12},
        "capital": {"type": "string", "enum": ["서울", "부산"]},
        "mood": {"type": "string", "enum": ["😀", "😢"]},
        "age": {"type": "integer"},
        "married": {"type": "boolean"},
        "address": {"type": "object", "properties": {"street": {"type": "string", "maxLength": 16},
                                                     "zip": {"type": "number"}},
                    "required": ["street", "zip"]},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 12}, "maxItems": 2},
    },
    "required": ["name", "capital", "mood", "age", "married", "address", "tags"],
}
PERSON_PATHS = ["/name", "/capital", "/mood", "/age", "/married", "/address/street", "/address/zip"]


def person_body(max_tokens: int) -> dict[str, Any]:
    return {"model": MODEL_NAME, "temperature": 0, "max_tokens": max_tokens, "logprobs": True, "top_logprobs": 3,
            "messages": [{"role": "user", "content": "Describe a person living in Seoul as JSON."}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON_SCHEMA}}}


def independent_figures(entries: list[dict[str, Any]], text: str, start: int, end: int) -> dict[str, Any]:
    """A leaf's figures straight from the provider's entries: byte ranges from each entry's
    ``bytes``, the leaf's byte range from the text; an entry counts when its bytes overlap."""
    joined = b"".join(bytes(e["bytes"]) for e in entries)
    # (llama.cpp strips trailing blank lines from the content; the entries keep them)
    assert joined.decode().startswith(text), "the entries' bytes do not spell the answer"
    begin, finish = len(text[:start].encode()), len(text[:end].encode())
    content = begin + 1 if text[start] == '"' else begin
    position, lps, alternatives, last_end = 0, [], None, 0
    for e in entries:
        size = len(e["bytes"])
        if alternatives is None and position <= content < position + size:
            alternatives = sorted((a["token"], math.exp(a["logprob"])) for a in e["top_logprobs"])
        if size and position < finish and position + size > begin:
            lps.append(e["logprob"])
            last_end = position + size
        position += size
    return {"token_count": len(lps), "sequence_logprob": math.fsum(lps), "min_token_probability": math.exp(min(lps)),
            "alternatives": alternatives, "ends_mid_token": last_end > finish}


def assert_fields_match_raw(fields: Sequence[FieldConfidence], entries: list[dict[str, Any]], text: str) -> int:
    """Each leaf's span (parsed back by json's own decoder) and figures (to 1e-9) against the raw
    entries; returns how many leaves end inside a token that also holds the next character."""
    decoder = json.JSONDecoder()
    mid_token = 0
    for field in fields:
        value, end = decoder.raw_decode(text, field.start)
        assert end == field.end and not isinstance(value, (dict, list)), field
        assert text[:field.start].rstrip()[-1] in ":[,", field
        expected = independent_figures(entries, text, field.start, field.end)
        assert field.token_count == expected["token_count"], field
        assert field.sequence_logprob == pytest.approx(expected["sequence_logprob"], abs=1e-9)
        assert field.mean_logprob == pytest.approx(expected["sequence_logprob"] / expected["token_count"], abs=1e-9)
        assert field.min_token_probability == pytest.approx(expected["min_token_probability"], abs=1e-9)
        alternatives = sorted(field.alternatives)
        assert [a for a, _ in alternatives] == [a for a, _ in expected["alternatives"]], field
        assert [p for _, p in alternatives] == pytest.approx([p for _, p in expected["alternatives"]], abs=1e-9)
        mid_token += expected["ends_mid_token"]
    return mid_token


@pytest.fixture(scope="module")
def person_answer(local_model: Any) -> dict[str, Any]:
    return raw_chat_completion(local_model.base_url, person_body(max_tokens=300))


@pytest.mark.real_model
def test_real_json_schema_answer_every_leaf_matches_the_raw_response(person_answer: dict[str, Any]) -> None:
    choice = person_answer["choices"][0]
    text, entries = choice["message"]["content"], choice["logprobs"]["content"]
    assert choice["finish_reason"] == "stop", text
    doc = json.loads(text)
    fields = field_confidence(extract_token_logprobs(choice["logprobs"]))
    assert [f.path for f in fields] == [path for path, _ in leaves_of(doc)]
    assert [f.path for f in fields][:len(PERSON_PATHS)] == PERSON_PATHS
    assert 0 < len(doc["tags"]) <= 2 and doc["capital"] in ("서울", "부산") and doc["mood"] in ("😀", "😢")
    assert {type(doc["age"]), type(doc["married"])} == {int, bool}
    # Values ending mid-token: `"서울",` and `true,` style tokens hold the closing character and the comma.
    assert assert_fields_match_raw(fields, entries, text) >= 3


@pytest.mark.real_model
def test_real_answer_cut_by_max_tokens_gives_the_complete_leaves(local_model: Any,
                                                                 person_answer: dict[str, Any]) -> None:
    whole_choice = person_answer["choices"][0]
    whole_text = whole_choice["message"]["content"]
    whole = field_confidence(extract_token_logprobs(whole_choice["logprobs"]))
    choice = raw_chat_completion(local_model.base_url, person_body(max_tokens=40))["choices"][0]
    text, entries = choice["message"]["content"], choice["logprobs"]["content"]
    assert choice["finish_reason"] == "length" and whole_text.startswith(text), text
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)
    fields = field_confidence(extract_token_logprobs(choice["logprobs"]))
    assert_fields_match_raw(fields, entries, text)
    complete = [f.path for f in whole if f.end < len(text) or (f.end == len(text) and not text[f.start].isdigit())]
    assert [f.path for f in fields] == complete and 0 < len(complete) < len(whole)


# --- the structured-output recipes through the real ChatOpenAI ---------------------------------

QUESTION = ('What is the capital of Korea? Reply with a JSON object with the keys "city" (a string) '
            'and "sure" (a boolean).')
ANSWER_SCHEMA = {"title": "Answer", "description": "An answer.", "type": "object",
                 "properties": {"city": {"type": "string"}, "sure": {"type": "boolean"}},
                 "required": ["city", "sure"]}


def structured(chat_model: Any, method: str, *, bound: bool = False) -> dict[str, Any]:
    """``with_structured_output(..., include_raw=True)`` with logprobs as a constructor field, or
    (``bound``) bound with ``.bind`` as many examples do."""
    options = {"max_tokens": 80}
    if bound:
        llm = chat_model(**options).bind(logprobs=True, top_logprobs=3)
    else:
        llm = chat_model(logprobs=True, top_logprobs=3, **options)
    result: dict[str, Any] = llm.with_structured_output(ANSWER_SCHEMA, method=method, include_raw=True).invoke(QUESTION)
    return result


@pytest.mark.real_model
@pytest.mark.parametrize("method", ["json_schema", "json_mode"])
def test_structured_output_keeps_logprobs_when_they_are_a_constructor_field(chat_model: Any, method: str) -> None:
    out = structured(chat_model, method)
    raw = out["raw"]
    assert out["parsing_error"] is None and set(out["parsed"]) == {"city", "sure"}
    payload = raw.response_metadata["logprobs"]
    fields = field_confidence(extract_token_logprobs(payload))
    assert [f.path for f in fields] == ["/city", "/sure"]
    # Offsets are in the text the tokens spell. Seen here: the bundled model wraps the JSON in a
    # Markdown fence, and the message content arrives without it.
    spelled = b"".join(bytes(e["bytes"]) for e in payload["content"]).decode()
    assert raw.content.strip() in spelled
    assert_fields_match_raw(fields, payload["content"], spelled)
    # A yes/no field: its alternatives are the label distribution.
    assert any((text or "").strip() in ("true", "false") for text, _ in fields[1].alternatives)


@pytest.mark.real_model
def test_structured_output_with_bound_logprobs_drops_them(chat_model: Any) -> None:
    raw = structured(chat_model, "json_schema", bound=True)["raw"]
    assert raw.content and raw.response_metadata.get("logprobs") is None  # the bound logprobs were lost


@pytest.mark.real_model
def test_function_calling_logprobs_cover_the_message_content_only(chat_model: Any) -> None:
    # OpenAI returns logprobs for message content only, never for tool-call arguments; here the
    # bundled model answers in prose besides. Whatever came back, the logprobs spell the content.
    raw = structured(chat_model, "function_calling")["raw"]
    payload = raw.response_metadata.get("logprobs") or {"content": []}
    text = b"".join(bytes(e["bytes"]) for e in payload["content"]).decode()
    assert text.strip() == raw.content.strip()
    fields = field_confidence(extract_token_logprobs(payload))
    assert all(text[f.start:f.end] for f in fields)


# --- the handler puts the fields in every report -------------------------------------------------

@pytest.mark.real_model
@pytest.mark.parametrize("streamed", [False, True], ids=["invoke", "stream"])
def test_handler_report_carries_the_fields_of_the_raw_response(chat_model: Any, local_model: Any,
                                                               streamed: bool) -> None:
    from observability import ConfidenceCallbackHandler, ResponseRecord

    body = person_body(max_tokens=300)
    records: list[ResponseRecord] = []
    handler = ConfidenceCallbackHandler(exporters=(), on_report=records.append)
    llm = chat_model(max_tokens=300, logprobs=True, top_logprobs=3).bind(response_format=body["response_format"])
    config: Any = {"callbacks": [handler]}
    if streamed:
        for _ in llm.stream(body["messages"][0]["content"], config=config):
            pass
        events = raw_chat_stream(local_model.base_url, body)
        entries = [e for event in events for choice in event.get("choices", [])
                   for e in ((choice.get("logprobs") or {}).get("content") or [])]
    else:
        llm.invoke(body["messages"][0]["content"], config=config)
        entries = raw_chat_completion(local_model.base_url, body)["choices"][0]["logprobs"]["content"]
    assert handler.open_runs == 0 and not handler.errors
    [record] = records
    assert record.report is not None and record.report.token_count == len(entries)
    # the same fields as field_confidence on the raw response's tokens ...
    expected = field_confidence(extract_token_logprobs({"content": entries}))
    assert [f.path for f in expected][:len(PERSON_PATHS)] == PERSON_PATHS
    assert [f.path for f in record.report.fields] == [f.path for f in expected]
    for got, want in zip(record.report.fields, expected, strict=True):
        assert (got.start, got.end, got.token_count) == (want.start, want.end, want.token_count)
        assert got.sequence_logprob == pytest.approx(want.sequence_logprob, abs=1e-9)
        assert got.min_token_probability == pytest.approx(want.min_token_probability, abs=1e-9)
    # ... and figures computed from the raw entries without our code
    spelled = b"".join(bytes(e["bytes"]) for e in entries).decode()
    assert_fields_match_raw(record.report.fields, entries, spelled)


def test_plain_answers_and_reports_without_json_get_no_fields() -> None:
    from observability import score_confidence

    assert score_confidence(tokens_of("The", " capital", " is", " Paris", ".")).fields == ()
    assert score_confidence([]).fields == ()
    report = score_confidence(tokens_of('{"', "a", '":', " 1", "}"))
    assert [(f.path, f.token_count) for f in report.fields] == [("/a", 1)]


# --- a key written twice: the value a parser keeps (issue 25, item 3) ---------------------------

def test_a_repeated_key_is_judged_on_the_value_a_json_parser_keeps() -> None:
    #                   0      1       2      3      4       5       6    7
    tokens = tokens_of('{"', "age", '": ', "31", ', "', "age", '": ', "7", "}")
    text = text_of(tokens)
    assert json.loads(text) == {"age": 7}
    (age,) = field_confidence(tokens)
    assert (age.path, text[age.start:age.end], age.duplicate_key) == ("/age", "7", True)
    assert (age.token_count, age.sequence_logprob) == (1, lp_sum(7))
    from observability import score_confidence

    assert score_confidence(tokens).fields == (age,)  # what confidence_fallback(metric="/age") reads


def test_a_repeated_key_drops_the_earlier_value_whole_and_marks_what_it_holds() -> None:
    raw = '{"a": {"x": 1, "y": [2, 3]}, "b": "k", "a": {"x": 4}, "c": {"d": 5, "d": 6}, "e": 7}'
    fields = field_confidence([tok(raw)])
    assert [(f.path, raw[f.start:f.end], f.duplicate_key) for f in fields] == [
        ("/b", '"k"', False), ("/a/x", "4", True), ("/c/d", "6", True), ("/e", "7", False)]
    parsed = json.loads(raw)
    assert sorted((f.path, json.loads(raw[f.start:f.end])) for f in fields) == sorted(leaves_of(parsed))
    assert not any(f.duplicate_key for f in field_confidence([tok('{"a": 1, "b": {"a": 2}}')]))


# --- cost: linear whatever the nesting (issue 25, item 5) ------------------------------------------

@pytest.mark.parametrize("piece", ["[", '{"a":', '{"a": [{"b": '])
def test_ten_thousand_open_levels_keep_memory_linear(piece: str) -> None:
    """A model stuck repeating `[` or `{"a":`: what the scan keeps per open level is bounded (it
    kept each level's whole JSON Pointer: 1.5 GB for 10,000 tokens of `[`)."""
    import tracemalloc

    tokens = [tok(piece) for _ in range(10_000)] + [tok("1"), tok("]")]
    extracted = extract_token_logprobs([{"token": t.token, "bytes": list(t.bytes or b""), "logprob": -0.5,
                                         "top_logprobs": []} for t in tokens])
    tracemalloc.start()
    try:
        fields = field_confidence(extracted)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2_000 * len(tokens) * len(piece), f"{peak:,} bytes at the peak"
    assert len(fields) == 1 and fields[0].token_count == 1


def test_json_fields_read_the_columns_not_token_objects() -> None:
    """The field pass makes a token object only for the token whose alternatives a field reports."""
    raw = json.dumps({"name": "Ann", "tags": ["a", "b"], "n": 3})
    tokens = extract_token_logprobs([{"token": char, "bytes": list(char.encode()), "logprob": -0.25,
                                      "top_logprobs": [{"token": char, "logprob": -0.25}]} for char in raw])
    fields = field_confidence(tokens)
    assert [f.path for f in fields] == ["/name", "/tags/0", "/tags/1", "/n"]
    assert tokens._tokens is None
