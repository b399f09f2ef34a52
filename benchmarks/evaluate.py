"""`make evaluate`: which confidence figure predicts a wrong answer of the bundled model.

Asks SmolLM2-135M (llama.cpp on 127.0.0.1, started and stopped here) the 60 capital questions of
benchmarks/capitals.jsonl, records every response (``record_to=``), labels each answer right when
it names an accepted city, and runs ``python -m observability evaluate`` on them. Writes
benchmarks/evaluation/{records,labels}.jsonl, result.json, calibration.json (the isotonic map of
sequence probability, for ``ConfidenceCallbackHandler(calibration=)``) and docs/evaluation.html
(the plots). A rerun that fits the same map leaves those files as they were: a new ``fitted_at``
alone is not written, so the tree stays clean when nothing changed.
"""

from __future__ import annotations

import json
import sys
import unicodedata
from pathlib import Path
from typing import Any

from pydantic import SecretStr

ROOT = Path(__file__).resolve().parent.parent
QUESTIONS = ROOT / "benchmarks" / "capitals.jsonl"
OUT = ROOT / "benchmarks" / "evaluation"


def plain(text: str) -> str:
    """Lower case without accents, for matching city names."""
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c)).casefold()


def is_right(answer: str, accepted: list[str]) -> bool:
    return any(plain(city) in plain(answer) for city in accepted)


def without_fit_time(value: Any) -> Any:
    """``value`` (parsed JSON) with every ``fitted_at`` key left out, at any depth."""
    if isinstance(value, dict):
        return {k: without_fit_time(v) for k, v in value.items() if k != "fitted_at"}
    if isinstance(value, list):
        return [without_fit_time(v) for v in value]
    return value


def keep_when_only_fit_time_changed(before: dict[Path, bytes]) -> list[Path]:
    """Write back each file's earlier bytes when its new content differs from them only in
    ``fitted_at``; return the files restored. ``before``: path → bytes before this run."""
    restored = []
    for path, old in before.items():
        new = path.read_bytes()
        if new != old and without_fit_time(json.loads(new)) == without_fit_time(json.loads(old)):
            path.write_bytes(old)
            restored.append(path)
    return restored


def main() -> int:
    from langchain_openai import ChatOpenAI

    from observability import ConfidenceCallbackHandler
    from observability.demo.model_server import MODEL_NAME, LocalModelServer
    from observability.evaluation.evaluate import main as evaluate

    items = [json.loads(line) for line in QUESTIONS.read_text(encoding="utf-8").splitlines() if line.strip()]
    OUT.mkdir(exist_ok=True)
    records_path, labels_path = OUT / "records.jsonl", OUT / "labels.jsonl"
    records_path.unlink(missing_ok=True)
    handler = ConfidenceCallbackHandler(exporters=(), record_to=records_path)
    answers: dict[str, tuple[str, list[str]]] = {}

    def keep(record: Any) -> None:
        answers[str(record.start.run_id)] = (record.text or "", record.start.metadata["accepted"])

    handler.on_report = keep
    with LocalModelServer(parallel=4) as server:
        print(f"asking {len(items)} questions of {MODEL_NAME} …", flush=True)
        model = ChatOpenAI(model=MODEL_NAME, base_url=server.base_url, api_key=SecretStr("unused"),
                           temperature=0, max_completion_tokens=16, logprobs=True, top_logprobs=5, max_retries=0,
                           timeout=300)
        model.batch([item["question"] for item in items],
                    [{"callbacks": [handler], "metadata": {"accepted": item["answers"]}} for item in items])
    with labels_path.open("w", encoding="utf-8") as labels:
        for run_id, (answer, accepted) in answers.items():
            labels.write(json.dumps({"run_id": run_id, "correct": is_right(answer, accepted)}) + "\n")
    fitted = (OUT / "result.json", OUT / "calibration.json")
    before = {path: path.read_bytes() for path in fitted if path.exists()}
    code = evaluate([str(records_path), "--labels", str(labels_path), "--json", str(fitted[0]),
                     "--html", str(ROOT / "docs" / "evaluation.html"), "--calibration", str(fitted[1])])
    if code == 0 and keep_when_only_fit_time_changed(before):
        print("the same calibration map as before: its fitted_at is kept, so the files are unchanged")
    return code


if __name__ == "__main__":
    sys.exit(main())
