"""Driver for tests/test_attach_env.py: an app that imports the package but never attaches it
to the calls below itself, except where it says so. Zero-code activation comes from the
environment (``OBSERVABILITY_LANGCHAIN=1``) at ``import observability``.

Model calls (8): a plain invoke; an invoke with an explicit handler too; an invoke inside
``observe_confidence()``; an invoke in a bare thread; a batch of two; a stream; an invoke with
``metadata={"route": "faq"}``. Prints one JSON line of handler counters, then keeps running
until SIGTERM so the test can scrape ``/metrics``.
"""

from __future__ import annotations

import json
import os
import signal
import threading

from langchain_openai import ChatOpenAI
from pydantic import SecretStr

import observability
from observability.attach import activation as _attach

# max_completion_tokens is the typed name of ChatOpenAI's max_tokens field (its alias)
model = ChatOpenAI(model=os.environ["APP_MODEL"], base_url=os.environ["APP_BASE_URL"], api_key=SecretStr("unused"),
                   temperature=0, max_completion_tokens=8, timeout=300, max_retries=0)

model.invoke("Say one.")
explicit = observability.ConfidenceCallbackHandler()  # default exporters, like the process-wide one
model.invoke("Say two.", config={"callbacks": [explicit]})
with observability.observe_confidence() as block:
    model.invoke("Say three.")
thread = threading.Thread(target=lambda: model.invoke("Say four."))
thread.start()
thread.join()
model.batch(["Say five.", "Say six."])
"".join(chunk.text for chunk in model.stream("Say seven."))
model.invoke("Say eight.", config={"metadata": {"route": "faq"}})  # metadata is not a label here

process_wide = _attach.process_wide_handler()
assert process_wide is not None
print(json.dumps({
    "threshold": process_wide.low_confidence_threshold,
    "process_wide_duplicates": process_wide.duplicate_runs,
    "explicit_duplicates": explicit.duplicate_runs,
    "block_duplicates": block.duplicate_runs,
    "open_runs": process_wide.open_runs + explicit.open_runs + block.open_runs,
    "errors": sum(process_wide.errors.values()),
}), flush=True)

stop = threading.Event()
signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
while not stop.wait(0.2):
    pass
