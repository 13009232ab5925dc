"""endcloud: end-cloud collaboration for e-commerce customer service.

A shop runs a small language model on its own hardware (the *end model*); a large model
behind any OpenAI-compatible API (the *cloud teacher*) labels its training data, judges its
replies and takes over what it cannot answer. See docs/architecture.md for the rooms.
"""

__version__ = "0.1.0"
