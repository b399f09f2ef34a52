"""Reports of recorded responses: read a record file, render a response as a terminal heatmap or
one self-contained HTML page, and map tokens to characters of the text.

    from observability.report import read_records, render_heatmap, summary_line, write_html_report
"""

from observability.core.text import token_offsets
from observability.exporters._jsonl import RecordFileError, read_records
from observability.report.heatmap import render_heatmap, summary_line
from observability.report.html import render_html_report, write_html_report

__all__ = [
    "RecordFileError",
    "read_records",
    "render_heatmap",
    "render_html_report",
    "summary_line",
    "token_offsets",
    "write_html_report",
]
