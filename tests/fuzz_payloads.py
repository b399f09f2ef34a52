"""Hypothesis strategies for malformed provider payloads, used by ``test_fuzz.py``.

Two kinds: ``junk`` (anything at all, for "never raises, never NaN") and labelled entries
(``entry_cases``: each drawn entry says whether it is well-formed and which logprob it must
yield), so a test can compute the expected token and skipped counts on its own.
"""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

from hypothesis import strategies as st
from openai.types.chat import ChatCompletionTokenLogprob
from openai.types.chat.chat_completion import ChoiceLogprobs
from pydantic import BaseModel, ConfigDict

POSITIVE_NOISE = 1e-4  # the documented tolerance for float noise above 0 (see _extract.POSITIVE_NOISE)

KEYS = ("logprob", "token", "bytes", "top_logprobs", "content", "refusal", "tokens", "token_logprobs",
        "text_offset", "logprobs", "logprobs_result", "model_name", "finish_reason", "id")

# Text including lone surrogates: JSON's "\ud800" escape decodes to one, so providers can send it.
any_text = st.text(st.characters(exclude_categories=()), max_size=12)
numbers = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30),
    st.sampled_from([10**400, -(10**400), 2**63, -(2**63)]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 0.0, 1e-300, -1e-300, 5e-5, 2e-4, 1.0]),
    st.booleans(),
)
scalars = st.one_of(st.none(), numbers, any_text, st.binary(max_size=12))


class OddModel(BaseModel):
    """A pydantic object with whatever fields a provider SDK might invent."""

    model_config = ConfigDict(extra="allow", arbitrary_types_allowed=True)


class Exploding:
    """An object whose every public attribute read raises something other than AttributeError."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # let repr and pretty-printers work
            raise AttributeError(name)
        raise RuntimeError(f"no reading {name} today")

    def __repr__(self) -> str:
        return "Exploding()"


def _sdk_object(model: type[BaseModel], fields: dict[str, Any]) -> Any:
    """The openai SDK's own model, built without validation. Its ``model_construct`` coerces
    some values (bool to float) and rejects others (ints too large for a float): those fall
    back to a plain namespace with the same fields."""
    try:
        return model.model_construct(**fields)
    except (OverflowError, TypeError, ValueError, RuntimeError):
        return SimpleNamespace(**fields)


def _objects(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    fields = st.dictionaries(st.sampled_from(KEYS), children, max_size=5)
    return st.one_of(
        fields.map(lambda d: SimpleNamespace(**d)),
        fields.map(lambda d: OddModel(**d)),
        fields.map(lambda d: _sdk_object(ChatCompletionTokenLogprob, d)),
        fields.map(lambda d: _sdk_object(ChoiceLogprobs, d)),
    )


junk: st.SearchStrategy[Any] = st.recursive(
    st.one_of(scalars, st.builds(Exploding)),
    lambda children: st.one_of(
        st.lists(children, max_size=6),
        st.lists(children, max_size=6).map(tuple),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), any_text), children, max_size=6),
        _objects(children),
    ),
    max_leaves=40,
)
"""Anything: nested lists, dicts, namespaces and pydantic objects of numbers, text and bytes."""

small_junk: st.SearchStrategy[Any] = st.recursive(
    scalars,
    lambda children: st.one_of(st.lists(children, max_size=3),
                               st.dictionaries(st.sampled_from(KEYS), children, max_size=3),
                               _objects(children)),
    max_leaves=6,
)
"""``junk``, smaller: for the many places one callback script fills."""


# ---- labelled entries: (entry, expected logprob or None when malformed) ----------------------

def _expected(value: float) -> float:
    return 0.0 if value > 0.0 else value


good_logprobs = st.one_of(
    st.floats(max_value=0.0, allow_nan=False),  # includes -inf: probability 0 is well-formed
    st.floats(min_value=0.0, max_value=POSITIVE_NOISE, exclude_min=True),  # float noise, read as 0
    st.integers(min_value=-1000, max_value=0),
)
bad_logprobs = st.one_of(
    st.none(), st.just(math.nan), st.just(math.inf), st.booleans(), any_text, st.binary(max_size=4),
    st.floats(min_value=POSITIVE_NOISE, exclude_min=True, allow_infinity=True),
    st.integers(min_value=1, max_value=10**6),
    st.sampled_from([10**400, -(10**400)]),  # ints no float can hold
    st.lists(st.floats(), max_size=2),
)
alternatives = st.one_of(
    st.none(), scalars,
    st.lists(st.one_of(st.fixed_dictionaries({"token": any_text, "logprob": numbers}), scalars), max_size=6),
    st.dictionaries(any_text, numbers, max_size=6),
)
token_bytes = st.one_of(
    st.none(), st.binary(max_size=8),
    st.lists(st.integers(min_value=0, max_value=255), max_size=8),
    st.lists(st.integers(min_value=-5, max_value=300), max_size=4),  # out of range: dropped
    any_text,
)


def _shape(fields: dict[str, Any], form: int) -> Any:
    # Not the openai SDK's model here: its model_construct coerces values (False becomes 0.0),
    # which would change the label an entry was drawn with. ``junk`` covers it.
    if form == 0:
        return fields
    if form == 1:
        return SimpleNamespace(**fields)
    return OddModel(**fields)


@st.composite
def good_entry(draw: st.DrawFn) -> tuple[Any, float]:
    value = draw(good_logprobs)
    fields: dict[str, Any] = {"logprob": value}
    for key, strategy in (("token", st.one_of(any_text, scalars)), ("bytes", token_bytes),
                          ("top_logprobs", alternatives), ("extra", scalars)):
        if draw(st.booleans()):
            fields[key] = draw(strategy)
    return _shape(fields, draw(st.integers(0, 2))), _expected(float(value))


@st.composite
def bad_entry(draw: st.DrawFn) -> tuple[Any, None]:
    kind = draw(st.integers(0, 2))
    if kind == 0:  # not an entry at all
        return draw(st.one_of(scalars, st.lists(scalars, max_size=3))), None
    fields: dict[str, Any] = {"token": draw(any_text), "top_logprobs": draw(alternatives)}
    if kind == 1:
        fields["logprob"] = draw(bad_logprobs)
    return _shape(fields, draw(st.integers(0, 2))), None


entry_cases = st.lists(st.one_of(good_entry(), bad_entry()), max_size=30)
"""A list of (entry, expected logprob or None when the entry is malformed)."""


def wrap_content(entries: list[Any], form: int) -> Any:
    """The same entries in each container providers use for OpenAI-shaped logprobs."""
    if form == 0:
        return entries  # the bare content list
    if form == 1:
        return {"content": entries, "refusal": None}
    if form == 2:  # an SDK-style object (the openai SDK's own coerces entries: see ``junk``)
        return SimpleNamespace(content=entries, refusal=None)
    if form == 3:
        return {"logprobs": {"content": entries, "refusal": None}, "finish_reason": "stop"}  # generation_info
    return tuple(entries)
