"""Follow one response from ``on_llm_end`` through the package and count the stops.

    python -m tools.walk            # prints the walk and: stops, modules, climbs, re-entries

A *stop* is a call from one of our modules into another (a loop calling the same function again
counts once); a *climb* is a call into a module that is already on the call stack, or into a room
above the caller's (core < exporters < langchain); a *re-entry* is a call into a module left
earlier and not on the stack. Not counted as stops: calls into ``core.types`` (the data types
are the vocabulary every stage speaks, not a stage) and calls between two exporter modules (one
sink's plumbing).
A straight walk has one stop per module and neither climbs nor re-entries. The response is a
JSON answer from ``observability.testing.FakeLogprobChatModel`` with the default exporters on
in-memory sinks, so the walk covers reading, scoring, fields, record and export.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from observability import ConfidenceCallbackHandler
from observability.exporters import default_exporters
from observability.testing import FakeLogprobChatModel, InMemoryTelemetry


@dataclass
class Walk:
    stops: list[tuple[str, str]] = field(default_factory=list)
    climbs: int = 0
    reentries: int = 0
    modules: list[str] = field(default_factory=list)


RANK = {"core": 0, "exporters": 1, "langchain": 2}


def _rank(module: str) -> int:
    return RANK.get(module.split(".")[1], 3)


def _counts(caller: str, callee: str) -> bool:
    both_exporters = caller.startswith("observability.exporters") and callee.startswith("observability.exporters")
    return callee != "observability.core.types" and not both_exporters


def _module(frame: FrameType) -> str | None:
    name = frame.f_globals.get("__name__", "")
    return name if isinstance(name, str) and name.startswith("observability.") else None


JSON_TOKENS = ['{"', "name", '":', ' "', "Ada", '",', ' "', "age", '":', " ", "36", ',"', "tags", '":', ' ["',
               "a", '","', "b", '"]}']


def walk_on_llm_end() -> Walk:
    telemetry = InMemoryTelemetry()
    handler = ConfidenceCallbackHandler(exporters=default_exporters(
        tracer_provider=telemetry.tracer_provider, meter_provider=telemetry.meter_provider,
        registry=telemetry.registry))
    llm = FakeLogprobChatModel(tokens=JSON_TOKENS, token_logprobs=[-0.05 * (i % 7) for i in range(len(JSON_TOKENS))])
    result = Walk()
    stack: list[str] = []
    recording = [0]

    def profile(frame: FrameType, event: str, arg: Any) -> None:
        if event not in ("call", "return"):
            return
        module = _module(frame)
        if module is None:
            return
        if event == "call":
            if frame.f_code.co_name == "on_llm_end" and module.endswith(".handler"):
                recording[0] += 1
            if recording[0] and stack and module != stack[-1] and _counts(stack[-1], module):
                step = (stack[-1], module)
                if not result.stops or result.stops[-1] != step:
                    if module in stack or _rank(module) > _rank(stack[-1]):
                        result.climbs += 1
                    elif module in result.modules:
                        result.reentries += 1
                    result.stops.append(step)
            if recording[0] and module not in result.modules and module != "observability.core.types":
                result.modules.append(module)
            stack.append(module)
        else:
            if stack:
                stack.pop()
            if frame.f_code.co_name == "on_llm_end" and module.endswith(".handler"):
                recording[0] -= 1

    sys.setprofile(profile)
    try:
        llm.invoke("Who?", config={"callbacks": [handler]})
    finally:
        sys.setprofile(None)
    return result


def main() -> int:
    walk = walk_on_llm_end()
    for caller, callee in walk.stops:
        print(f"{caller.removeprefix('observability.'):>28} -> {callee.removeprefix('observability.')}")
    print(f"\n{len(walk.stops) + 1} stops in {len(walk.modules)} modules, {walk.climbs} climbs back up, "
          f"{walk.reentries} re-entries")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
