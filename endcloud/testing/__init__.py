"""Test doubles that ship with the library (like distilabel's), for endcloud's tests, benchmarks
and anyone testing code built on endcloud. The library itself never imports this package.

    from endcloud.testing import FaultyCloud, ScriptedModel, ScriptedTeacher

- `FaultyCloud` (`cloud.py`): a real OpenAI-compatible HTTP server on 127.0.0.1 with
  injectable faults (429, 500, hangs, malformed or empty replies, dripping, streaming);
  `python -m endcloud.testing --latency 0.2 --p429 0.04` runs one on its own.
- `ScriptedModel`, `LookupEndModel` (`models.py`): end models (`runtime.protocol.ServedModel`)
  answering by a function or a dict, recording every batch and adapter swap.
- `ScriptedTeacher`, `LookupTeacher` (`models.py`): in-process teachers (`cloud.Teacher`)
  answering fixed text or by a dict, with failure and delay.
"""

from endcloud.testing.cloud import OUTCOMES, FaultyCloud, default_responder
from endcloud.testing.models import LookupEndModel, LookupTeacher, ScriptedModel, ScriptedTeacher

__all__ = ["OUTCOMES", "FaultyCloud", "LookupEndModel", "LookupTeacher", "ScriptedModel", "ScriptedTeacher",
           "default_responder"]
