"""Confidence on the run records of tracers that keep their own: LangSmith, Langfuse and MLflow.

An exporter (``TracerRunsExporter``, in ``default_exporters``) that, when a model run's records
arrive, adds the figures to the run each of these tracers keeps for it (``observability.langchain.peers``
remembers their handlers per run, moves them behind ours so they have not sent or ended the run
yet, and finds their run objects when it ends), in memory: the tracer ships them with the run,
from its own background queue. Nothing here does I/O on the app's thread.

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

Each tracer's run is found through its handler's run map in ``peers`` (Langfuse's private ``_runs``,
MLflow's private ``_run_span_mapping``; LangSmith's ``run_map`` is public); a lookup or a write
that fails is counted in ``failures``, logged once by tracer name and exception type, and the run
goes on without figures in that tracer. docs/peer-tracers.md has the
versions tested and where each figure shows up in the tracer's UI.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from observability.core.types import ResponseRecord
from observability.exporters import _peer_spans
from observability.exporters._definitions import finite
from observability.exporters._otel_spans import CONFIDENCE_PREFIX, HEADLINE_SCORES, confidence_attributes
from observability.langchain import mlflow_runs
from observability.langchain.peers import LANGFUSE, LANGSMITH, MLFLOW

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


def _langsmith(run: Any, records: Sequence[ResponseRecord]) -> None:
    run.extra.setdefault("metadata", {}).update(confidence_attributes(records))


def _langfuse(generation: Any, records: Sequence[ResponseRecord]) -> None:
    figures = {key.removeprefix(CONFIDENCE_PREFIX): value for key, value in confidence_attributes(records).items()}
    generation.update(metadata={LANGFUSE_METADATA_KEY: figures})
    for name, value in score_figures(records).items():
        generation.score(name=name, value=value, data_type="NUMERIC")


def _mlflow(span: Any, records: Sequence[ResponseRecord]) -> None:
    if span.span_id is None:  # MLflow's no-op span (tracing disabled)
        return
    span.set_attributes(confidence_attributes(records))
    figures = score_figures(records)
    if figures:
        mlflow_runs.FEEDBACK.put(span.trace_id, span.span_id, figures)


_WRITERS: dict[str, Callable[[Any, Sequence[ResponseRecord]], None]] = {
    LANGSMITH: _langsmith, LANGFUSE: _langfuse, MLFLOW: _mlflow}


class TracerRunsExporter:
    """Adds a model run's confidence to the run LangSmith, Langfuse or MLflow keeps for it (see the
    module docstring); does nothing for a run none of them traces."""

    def __init__(self) -> None:
        _peer_spans.install()
        self.failures: Counter[str] = Counter()
        """Runs whose figures a tracer could not take, by tracer name (each tracer is logged once)."""

    def export(self, records: Sequence[ResponseRecord]) -> None:
        if not records:
            return
        found = _peer_spans.RUN_PEERS.get()  # set by the handler for this export (observability.langchain.peers)
        if found is None or found.run_id != records[0].start.run_id:
            return
        self.failures.update(found.failed)  # a tracer whose run could not be looked up (logged by peers)
        for peer, run in found.runs:
            try:
                _WRITERS[peer](run, records)
            except Exception as exc:  # a tracer's internals changed: that tracer goes without figures
                self.failures[peer] += 1
                _peer_spans.log_once(f"{peer} run", f"observability: {peer}'s run does not look like the version we "
                                     f"know ({type(exc).__name__} adding the figures to it); its runs go on "
                                     "without our figures")


_peer_spans.add_run_exporter(TracerRunsExporter)
