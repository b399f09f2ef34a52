"""extract_token_logprobs on every provider shape, from recorded payloads (parsing only)."""

from __future__ import annotations

import ast
import math
import re
from pathlib import Path
from typing import Any

import pytest
from openai.types.chat import ChatCompletionTokenLogprob
from openai.types.chat.chat_completion import ChoiceLogprobs
from openai.types.chat.chat_completion_token_logprob import TopLogprob
from openai.types.completion_choice import Logprobs as CompletionLogprobs
from pydantic import BaseModel

from observability import extract_token_logprobs

SEEDS = Path(__file__).resolve().parent / "seeds"  # copies of the shared seeds: the repository stands alone


def seed_korean_payload() -> dict[str, Any]:
    """The recorded OpenAI response of the Korean seed: '대한민국의 수도는 서울입니다.'"""
    text = (SEEDS / "004_3e01e40e1f640dc1.txt").read_text(encoding="utf-8")
    match = re.search(r"'logprobs': (\{'content'.*?\]\})\}", text)
    assert match, "Korean seed no longer holds its recorded logprobs"
    payload: dict[str, Any] = ast.literal_eval(match.group(1))
    return payload


def seed_english_stream() -> list[dict[str, Any]]:
    """The last streamed snapshot of the LangChain guide seed: 'As an AI,' (4 tokens)."""
    text = (SEEDS / "000_f13158d5c2849ea4.txt").read_text(encoding="utf-8")
    snapshots = [line for line in text.splitlines() if line.startswith("[{'token'")]
    assert snapshots, "guide seed no longer holds its streamed output"
    entries: list[dict[str, Any]] = ast.literal_eval(snapshots[-1])
    return entries


# Ollama's own class is a pydantic model with these fields (langchain-ollama 1.1); not installed here.
class OllamaTopLogprob(BaseModel):
    token: str
    logprob: float


class OllamaLogprob(BaseModel):
    token: str
    logprob: float
    top_logprobs: list[OllamaTopLogprob] | None = None


def chat_entry(token: str, logprob: float, alts: list[tuple[str, float]]) -> dict[str, Any]:
    return {"token": token, "bytes": list(token.encode()), "logprob": logprob,
            "top_logprobs": [{"token": t, "bytes": list(t.encode()), "logprob": lp} for t, lp in alts]}


ENTRIES = [chat_entry("Hi", -0.1, [("Hi", -0.1), ("Hello", -2.5)]),
           chat_entry(" there", -1.2, [(" there", -1.2), ("!", -0.9), (" you", -3.0)])]
EXPECTED = [("Hi", -0.1, (("Hi", -0.1), ("Hello", -2.5))),
            (" there", -1.2, (("!", -0.9), (" there", -1.2), (" you", -3.0)))]

SDK_ENTRIES = [ChatCompletionTokenLogprob(
    token=e["token"], bytes=e["bytes"], logprob=e["logprob"],
    top_logprobs=[TopLogprob(**alt) for alt in e["top_logprobs"]]) for e in ENTRIES]

PROVIDER_PAYLOADS = [
    pytest.param({"content": ENTRIES, "refusal": None}, id="openai-chat"),
    pytest.param(ENTRIES, id="openai-bare-content"),
    pytest.param(ChoiceLogprobs(content=SDK_ENTRIES, refusal=None), id="openai-sdk-objects"),
    pytest.param(SDK_ENTRIES, id="openai-sdk-list"),
    pytest.param({"logprobs": {"content": ENTRIES}, "finish_reason": "stop"}, id="generation-info"),
    pytest.param([{"token": "Hi", "logprob": -0.1, "top_logprobs": [{"token": "Hi", "logprob": -0.1},
                                                                   {"token": "Hello", "logprob": -2.5}]},
                  {"token": " there", "logprob": -1.2,
                   "top_logprobs": [{"token": " there", "logprob": -1.2}, {"token": "!", "logprob": -0.9},
                                    {"token": " you", "logprob": -3.0}]}], id="vertex-logprobs-result"),
    pytest.param({"logprobs_result": [{"token": "Hi", "logprob": -0.1, "top_logprobs": [
        {"token": "Hi", "logprob": -0.1}, {"token": "Hello", "logprob": -2.5}]},
        {"token": " there", "logprob": -1.2, "top_logprobs": [{"token": " there", "logprob": -1.2},
         {"token": "!", "logprob": -0.9}, {"token": " you", "logprob": -3.0}]}], "avg_logprobs": -0.65},
        id="vertex-response-metadata"),
    pytest.param([OllamaLogprob(token="Hi", logprob=-0.1, top_logprobs=[OllamaTopLogprob(token="Hi", logprob=-0.1),
                  OllamaTopLogprob(token="Hello", logprob=-2.5)]),
                  OllamaLogprob(token=" there", logprob=-1.2, top_logprobs=[
                      OllamaTopLogprob(token=" there", logprob=-1.2), OllamaTopLogprob(token="!", logprob=-0.9),
                      OllamaTopLogprob(token=" you", logprob=-3.0)])], id="ollama-objects"),
    pytest.param({"content": [{**e, "id": 7, "bytes": None, "extra": {"x": 1}} for e in ENTRIES]},
                 id="llamacpp-extra-fields-null-bytes"),
    pytest.param({"text_offset": None, "token_logprobs": None, "tokens": None, "top_logprobs": None,
                  "content": ENTRIES}, id="llamacpp-completions-both-shapes"),
    pytest.param({"tokens": ["Hi", " there"], "token_logprobs": [-0.1, -1.2],
                  "top_logprobs": [{"Hi": -0.1, "Hello": -2.5}, {" there": -1.2, "!": -0.9, " you": -3.0}],
                  "text_offset": [0, 2]}, id="openai-legacy-completions"),
    pytest.param(CompletionLogprobs(tokens=["Hi", " there"], token_logprobs=[-0.1, -1.2],
                                    top_logprobs=[{"Hi": -0.1, "Hello": -2.5},
                                                  {" there": -1.2, "!": -0.9, " you": -3.0}],
                                    text_offset=[0, 2]), id="openai-legacy-sdk-object"),
]


@pytest.mark.parametrize("payload", PROVIDER_PAYLOADS)
def test_every_provider_shape_gives_the_same_tokens(payload: Any) -> None:
    tokens = extract_token_logprobs(payload)
    assert tokens.skipped == 0
    assert [(t.token, t.logprob, t.top_logprobs) for t in tokens] == EXPECTED


def test_bytes_are_kept_when_sent_and_none_when_not() -> None:
    assert [t.bytes for t in extract_token_logprobs(ENTRIES)] == [b"Hi", b" there"]
    assert [t.bytes for t in extract_token_logprobs({"tokens": ["a"], "token_logprobs": [-1.0]})] == [None]


@pytest.mark.parametrize("payload", [None, [], {}, {"content": None, "refusal": None}, {"content": []},
                                     {"token_logprobs": None, "tokens": None, "content": None}])
def test_missing_or_empty_payload_gives_no_tokens_and_no_skips(payload: Any) -> None:
    tokens = extract_token_logprobs(payload)
    assert list(tokens) == [] and tokens.skipped == 0


def test_refusal_tokens_are_read_when_there_is_no_content() -> None:
    tokens = extract_token_logprobs({"content": None, "refusal": ENTRIES[:1]})
    assert [t.token for t in tokens] == ["Hi"]


def test_legacy_first_entry_none_is_the_echoed_prompt_not_malformed() -> None:
    tokens = extract_token_logprobs({"tokens": ["<s>", "a", "b"], "token_logprobs": [None, -0.5, -0.25],
                                     "top_logprobs": [None, {"a": -0.5}, {"b": -0.25}]})
    assert [(t.token, t.logprob) for t in tokens] == [("a", -0.5), ("b", -0.25)]
    assert tokens.skipped == 0


def test_legacy_mismatched_lengths_count_the_entries_without_logprob() -> None:
    tokens = extract_token_logprobs({"tokens": ["a", "b", "c"], "token_logprobs": [-0.5],
                                     "top_logprobs": []})
    assert [t.token for t in tokens] == ["a"]
    assert tokens.skipped == 2


@pytest.mark.parametrize(("entry", "reason"), [
    ({"token": "x", "logprob": float("nan")}, "NaN"),
    ({"token": "x", "logprob": 0.7}, "clearly positive"),
    ({"token": "x", "logprob": "-0.5"}, "string"),
    ({"token": "x", "logprob": True}, "bool"),
    ({"token": "x"}, "missing logprob"),
    (None, "None entry"),
    ("token", "string entry"),
    (42, "number entry"),
])
def test_malformed_entries_are_skipped_and_counted(entry: Any, reason: str) -> None:
    tokens = extract_token_logprobs({"content": [entry, {"token": "ok", "logprob": -1.0}]})
    assert [t.token for t in tokens] == ["ok"], reason
    assert tokens.skipped == 1, reason


def test_infinite_and_noise_logprobs_are_kept() -> None:
    tokens = extract_token_logprobs([{"token": "a", "logprob": -math.inf}, {"token": "b", "logprob": 3e-7}])
    assert [t.logprob for t in tokens] == [-math.inf, 0.0]
    assert tokens.skipped == 0


def test_malformed_alternatives_are_dropped_without_losing_the_token() -> None:
    tokens = extract_token_logprobs([{"token": "a", "logprob": -0.1, "top_logprobs": [
        {"token": "a", "logprob": -0.1}, {"token": "b", "logprob": float("nan")}, None, "junk",
        {"token": 5, "logprob": -2.0}]}])
    assert tokens[0].top_logprobs == (("a", -0.1), (None, -2.0))


def test_bad_bytes_keep_the_token_without_bytes() -> None:
    tokens = extract_token_logprobs([{"token": "a", "bytes": [300, -1], "logprob": -0.1}])
    assert tokens[0].bytes is None and tokens[0].token == "a"


@pytest.mark.parametrize("payload", [42, "logprobs", b"\xff", {"unknown": 1}, object(), {"content": "text"}])
def test_unrecognised_payloads_count_as_one_skipped_entry(payload: Any) -> None:
    tokens = extract_token_logprobs(payload)
    assert list(tokens) == [] and tokens.skipped == 1


def test_korean_seed_tokens_carry_split_utf8_bytes() -> None:
    tokens = extract_token_logprobs(seed_korean_payload())
    assert len(tokens) == 15 and tokens.skipped == 0
    assert b"".join(t.bytes or b"" for t in tokens).decode("utf-8") == "대한민국의 수도는 서울입니다."
    assert tokens[2].bytes == bytes([235, 175]) and tokens[3].bytes == bytes([188])  # 민 in two pieces


def test_english_seed_stream_snapshot() -> None:
    tokens = extract_token_logprobs({"content": seed_english_stream()})
    assert [t.token for t in tokens] == ["As", " an", " AI", ","]
    assert [t.logprob for t in tokens] == [-1.7523563, -0.019908238, -0.0093033705, -0.08852102]
    assert all(t.top_logprobs == () for t in tokens)


def _chunk(text: str, lp: float) -> dict[str, Any]:
    return {"content": [{"token": text, "bytes": list(text.encode()), "logprob": lp, "top_logprobs": []}],
            "refusal": None}


CHUNKS = [_chunk(word, -0.1 * (i + 1)) for i, word in enumerate(["The", " capital", " is", " Canberra"])]
ALL = [entry for chunk in CHUNKS for entry in chunk["content"]]


@pytest.mark.parametrize(("end", "streamed", "expected"), [
    ({"content": ALL}, CHUNKS, ALL),  # a plain stream: the end event holds every chunk's entries
    ({"content": ALL[-1:]}, CHUNKS, ALL),  # v3 events: the end keeps only the last chunk's
    ({"content": ALL[:2]}, CHUNKS, ALL),  # a partial result that misses the last chunks
    ({"content": ALL[1:3]}, CHUNKS, ALL[1:3]),  # neither beginning nor end: the end event wins
    ({"content": ALL + ALL[:1]}, CHUNKS, ALL + ALL[:1]),  # the end holds more: it wins
    (None, CHUNKS, ALL),  # no end payload (an error): the chunks
    ({"content": ALL[:2]}, [*CHUNKS[:3], ALL[3:]], ALL),  # a bare list among the chunks
    # a chunk of the legacy shape holds no entries
    ({"content": ALL[:2]}, [*CHUNKS[:3], {**CHUNKS[3], "token_logprobs": []}], ALL[:3]),
    ({"content": ALL[:2]}, [*CHUNKS[:3], {"content": "junk"}], ALL[:3]),
])
def test_a_stream_reads_the_longer_of_its_chunks_and_its_end_event_when_they_agree(
        end: Any, streamed: list[Any], expected: list[dict[str, Any]]) -> None:
    """``extract_response``'s reconciling rule, on each shape the chunks can take: the chunks' entries
    are counted in C when every chunk is a chat dict, else joined and compared one by one."""
    from observability.core.extract import extract_response

    tokens = extract_response(end, streamed)
    assert tokens is not None
    assert [t.logprob for t in tokens] == [entry["logprob"] for entry in expected]
