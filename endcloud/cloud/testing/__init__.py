"""Test doubles that ship with the library (like distilabel's): other rooms' tests use them.

`FaultyCloud` is a real OpenAI-compatible HTTP server on 127.0.0.1 with injectable faults;
see `double.py` for its knobs.
"""

from endcloud.cloud.testing.double import OUTCOMES, FaultyCloud, default_responder

__all__ = ["FaultyCloud", "OUTCOMES", "default_responder"]
