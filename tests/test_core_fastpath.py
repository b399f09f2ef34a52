"""The fast path (``score_chat_entries``, in C, and lazy ``ResponseRecord.tokens``) against the
general path (``extract_token_logprobs`` then ``score_confidence``): the identical report, float
for float, on random OpenAI chat payloads, plain and malformed."""

from __future__ import annotations

import itertools
import math
import pickle
from typing import Any
from uuid import uuid4

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from langchain_core.messages import AIMessage
from langchain_core.outputs import ChatGeneration, LLMResult

from observability import ConfidenceCallbackHandler, ResponseRecord, extract_token_logprobs, score_confidence
from observability._score import score_chat_entries
from observability._types import LazyTokens
from tests.test_core_extract import chat_entry, seed_english_stream, seed_korean_payload

FUZZ = settings(max_examples=400, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

plain_logprobs = st.one_of(
    st.floats(min_value=-12.0, max_value=0.0),  # real ones: the order of the sums shows in the bits
    st.floats(min_value=-12.0, max_value=0.0),
    st.floats(max_value=0.0, allow_nan=False),  # includes -inf and -0.0
    st.sampled_from([-0.0, 0.0, -1e-300, -708.5, -800.0, math.log(0.5), -math.inf]),
)
odd_logprobs = st.one_of(  # each sends the response to the general path
    st.sampled_from([math.nan, math.inf, 5e-5, 1e-4, 2e-4, 1.0, None, True, "-0.5"]),
    st.integers(min_value=-5, max_value=2),
)
texts = st.one_of(st.text(max_size=4), st.sampled_from(["서울", "\ud800", " the", ""]), st.none())
Entry = dict[str, Any]


def _korean_pieces(text: str, cuts: list[int]) -> list[bytes]:
    """``text``'s UTF-8 cut at ``cuts``: characters split across tokens, as providers send Korean."""
    raw = text.encode()
    points = sorted({0, len(raw), *(c % (len(raw) + 1) for c in cuts)})
    return [raw[a:b] for a, b in itertools.pairwise(points)]


@st.composite
def alternatives(draw: st.DrawFn) -> Any:
    kind = draw(st.integers(0, 4))
    if kind == 0:
        return draw(st.sampled_from([None, [], "missing"]))
    values = sorted(draw(st.lists(plain_logprobs, max_size=7)), reverse=True)  # best first, as sent
    return [{"token": draw(texts), "bytes": None, "logprob": v} for v in values]


@st.composite
def plain_payloads(draw: st.DrawFn) -> list[Entry]:
    """Entries in the plain shape: bytes valid, Korean pieces, missing or junk."""
    size = draw(st.integers(0, 40))
    pieces = _korean_pieces(draw(st.sampled_from(["대한민국의 수도는 서울입니다.", "As an AI, 😀 ok"])),
                            draw(st.lists(st.integers(0, 60), max_size=size)))
    entries: list[Entry] = []
    for i in range(size):
        entry: Entry = {"token": draw(texts), "logprob": draw(plain_logprobs)}
        form = draw(st.integers(0, 4))
        if form == 0 and i < len(pieces):
            entry["bytes"], entry["token"] = list(pieces[i]), "bytes:" + repr(pieces[i])
        elif form == 1:
            entry["bytes"] = list((entry["token"] or "").encode("utf-8", "surrogatepass"))
        elif form == 2:
            entry["bytes"] = draw(st.one_of(st.none(), st.lists(st.integers(-2, 300), max_size=3),
                                            st.binary(max_size=3)))
        tops = draw(alternatives())
        if tops != "missing":
            entry["top_logprobs"] = tops
        entries.append(entry)
    return entries


@st.composite
def payloads(draw: st.DrawFn) -> tuple[list[Any], bool]:
    """(entries, whether every entry is in the plain shape): a plain payload, and in half the
    cases one defect in one entry, each sending the response to the general path."""
    entries: list[Any] = draw(plain_payloads())
    defect = draw(st.integers(0, 11))
    if not entries or defect < 6:
        return entries, True
    entry = entries[draw(st.integers(0, len(entries) - 1))]
    tops = entry.get("top_logprobs") or []
    if defect == 6:
        entry["logprob"] = draw(odd_logprobs)
    elif defect == 7:
        del entry["logprob"]
    elif defect == 8:
        entries[entries.index(entry)] = draw(st.sampled_from([None, "x", -0.5, ["x"]]))
    elif defect == 9:  # not best first, in every entry: extraction sorts them (changing the sums' bits)
        for other in entries:
            if isinstance(other.get("top_logprobs"), list):
                other["top_logprobs"].reverse()
    elif defect == 10:
        tops.insert(draw(st.integers(0, len(tops))), draw(st.one_of(
            odd_logprobs.map(lambda v: {"token": "x", "logprob": v}),
            st.sampled_from([None, "x", {"token": "x"}, 3.0]))))
        entry["top_logprobs"] = tops
    else:
        entry["top_logprobs"] = draw(st.sampled_from([(), {"a": -0.5}, "", 0]))
    return entries, False


def same_report(fast: Any, general: Any) -> None:
    assert fast == general
    assert repr(fast) == repr(general)  # float for float, -0.0 included


@FUZZ
@given(case=payloads(), threshold=st.sampled_from([0.5, 1.0, 1e-9, 0.9]))
def test_fast_path_scores_exactly_like_extract_then_score(case: tuple[list[Any], bool], threshold: float) -> None:
    entries, plain = case
    general = score_confidence(extract_token_logprobs(entries), low_confidence_threshold=threshold)
    fast = score_chat_entries(entries, low_confidence_threshold=threshold)
    if plain:
        assert fast is not None  # the plain shape never falls back
    if fast is not None:
        same_report(fast, general)


def _record(payload: Any) -> ResponseRecord:
    records: list[ResponseRecord] = []
    handler = ConfidenceCallbackHandler(exporters=(), on_report=records.append)
    run_id = uuid4()
    handler.on_chat_model_start({}, [[]], run_id=run_id, invocation_params={"logprobs": True})
    generation = ChatGeneration(message=AIMessage(content="x"), generation_info={"logprobs": payload})
    handler.on_llm_end(LLMResult(generations=[[generation]]), run_id=run_id)
    assert not handler.errors
    return records[0]


@FUZZ
@given(case=payloads())
def test_handler_records_the_general_paths_tokens_and_report(case: tuple[list[Any], bool]) -> None:
    entries, _ = case
    payload = {"content": entries, "refusal": None}
    record = _record(payload)
    tokens = extract_token_logprobs(payload)
    assert record.report is not None
    same_report(record.report, score_confidence(tokens))
    assert record.tokens == tuple(tokens) and len(record.tokens) == len(tokens)
    assert list(record.tokens) == list(tokens)


def test_record_tokens_are_lazy_and_behave_as_the_tuple() -> None:
    payload = seed_korean_payload()
    record = _record(payload)
    tokens = tuple(extract_token_logprobs(payload))
    assert isinstance(record.tokens, LazyTokens) and record.tokens._tokens is None  # not built yet
    assert len(record.tokens) == len(tokens) and bool(record.tokens)
    assert record.tokens[0] == tokens[0] and record.tokens[-2:] == tokens[-2:]
    assert record.tokens == tokens and tokens == record.tokens and hash(record.tokens) == hash(tokens)
    assert repr(record.tokens) == repr(tokens)
    assert pickle.loads(pickle.dumps(record.tokens)) == tokens
    assert record == _record(payload).__class__(**{**_fields(record), "tokens": tokens})


def _fields(record: ResponseRecord) -> dict[str, Any]:
    return {name: getattr(record, name) for name in ResponseRecord.__dataclass_fields__}


def test_recorded_payloads_take_the_fast_path() -> None:
    for entries in (seed_korean_payload()["content"], seed_english_stream(),
                    [chat_entry("a", -0.1, [("a", -0.1), ("b", -2.5)])]):
        fast = score_chat_entries(entries)
        assert fast is not None
        same_report(fast, score_confidence(extract_token_logprobs(entries)))


def test_lazy_tokens_build_once() -> None:
    calls: list[int] = []

    def build() -> list[Any]:
        calls.append(1)
        return list(extract_token_logprobs(seed_english_stream()))

    lazy = LazyTokens(build, 4)
    assert len(lazy) == 4 and not calls
    assert list(lazy) == list(lazy) and calls == [1]
