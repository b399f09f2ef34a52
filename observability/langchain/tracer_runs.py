"""Confidence on the run records of tracers that keep their own: LangSmith, Langfuse and MLflow.

An exporter (``TracerRunsExporter``, in ``default_exporters``) that, when a model run's records
arrive, finds the run in each of these tracers that took part in it (``observability.langchain.peers``
remembers them per run and moves their handler behind ours, so they have not sent or ended it yet)
and adds the figures there, in memory: the tracer ships them with the run, from its own background
queue. Nothing here does I/O on the app's thread.

- **LangSmith** (``langchain_core.tracers.langchain.LangChainTracer``): the run's metadata
  (``run.extra["metadata"]``, read from its public ``run_map``) gets the ``llm.confidence.*``
  figures, sent with the run's end (the PATCH LangSmith was about to queue).
- **MLflow** (``mlflow.langchain.autolog()``'s ``MlflowLangchainTracer``): the ``llm.confidence.*``
  attributes on its LLM span, and the headline figures as feedback assessments, logged from a
  background queue (``observability.langchain.mlflow_runs``).
- **Langfuse** (``langfuse.langchain.CallbackHandler``): its generation for the run gets the headline
  figures as numeric scores (``LangfuseGeneration.score``, queued by the SDK's score ingestion) and
  all figures as the metadata key ``llm_confidence``; the ``llm.confidence.*`` attributes and events go
  onto the generation's span through the span exporter, which then makes no span of its own.

Each tracer's run lookup goes through its handler's run map (Langfuse's private ``_runs``,
MLflow's private ``_run_span_mapping``; LangSmith's ``run_map`` is public): guarded, logged once by tracer name and
exception type, and the run goes on without figures in that tracer. docs/peer-tracers.md has the
versions tested and where each figure shows up in the tracer's UI.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any
from uuid import UUID

from observability.core.types import ResponseRecord
from observability.exporters import _peer_spans
from observability.exporters._definitions import finite
from observability.exporters._otel_spans import CONFIDENCE_PREFIX, HEADLINE_SCORES, confidence_attributes
from observability.langchain import mlflow_runs
from observability.langchain import peers as _peers

RUN_PEERS = (_peers.LANGSMITH, _peers.LANGFUSE, _peers.MLFLOW)
LANGFUSE_METADATA_KEY = "llm_confidence"


def score_figures(records: Sequence[ResponseRecord]) -> dict[str, float]:
    """The headline figures a tracer charts as scores (choice 0): ``HEADLINE_SCORES`` and, with a
    calibration map, ``calibrated_probability``."""
    first = records[0]
    figures: dict[str, float] = {}
    if first.report is not None:
        for name in HEADLINE_SCORES:
            value = finite(getattr(first.report, name))
            if value is not None:
                figures[name] = value
    calibrated = finite(first.calibrated_probability)
    if calibrated is not None:
        figures["calibrated_probability"] = calibrated
    return figures


def _langsmith(handler: Any, run_id: UUID, records: Sequence[ResponseRecord]) -> None:
    run = handler.run_map.get(str(run_id))
    if run is None:
        return
    run.extra.setdefault("metadata", {}).update(confidence_attributes(records))


def _langfuse(handler: Any, run_id: UUID, records: Sequence[ResponseRecord]) -> None:
    generation = _peers.langfuse_generation(handler, run_id)
    if generation is None:
        return
    figures = {key.removeprefix(CONFIDENCE_PREFIX): value for key, value in confidence_attributes(records).items()}
    generation.update(metadata={LANGFUSE_METADATA_KEY: figures})
    for name, value in score_figures(records).items():
        generation.score(name=name, value=value, data_type="NUMERIC")


def _mlflow(tracer: Any, run_id: UUID, records: Sequence[ResponseRecord]) -> None:
    span = mlflow_runs.mlflow_span(tracer, run_id)
    if span is None or span.span_id is None:  # not traced, or MLflow's no-op span (tracing disabled)
        return
    span.set_attributes(confidence_attributes(records))
    figures = score_figures(records)
    if figures:
        mlflow_runs.FEEDBACK.put(span.trace_id, span.span_id, figures)


_WRITERS: dict[str, Callable[[Any, UUID, Sequence[ResponseRecord]], None]] = {
    _peers.LANGSMITH: _langsmith, _peers.LANGFUSE: _langfuse, _peers.MLFLOW: _mlflow}


class TracerRunsExporter:
    """Adds a model run's confidence to the run LangSmith, Langfuse or MLflow keeps for it (see the
    module docstring); does nothing for a run none of them traces."""

    def __init__(self) -> None:
        _peers.install()
        self.failures: Counter[str] = Counter()
        """Runs whose figures a tracer could not take, by tracer name (each tracer is logged once)."""

    def export(self, records: Sequence[ResponseRecord]) -> None:
        if not records:
            return
        run_id = records[0].start.run_id
        for peer, handler in _peers.peer_handlers(run_id, RUN_PEERS):
            try:
                _WRITERS[peer](handler, run_id, records)
            except Exception as exc:  # a tracer's internals changed: that tracer goes without figures
                self.failures[peer] += 1
                _peers.log_once(f"{peer} run", f"{peer}'s LangChain handler does not look like the version we "
                                f"know ({type(exc).__name__} adding the figures to its run)",
                                "its runs go on without our figures")


_peer_spans.add_run_exporter(TracerRunsExporter)
