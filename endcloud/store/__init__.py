"""SQLite storage shared by the server, the review track and the online loop.

One database file per workspace (`endcloud.db`), WAL mode so readers never block the
writer, and `synchronous=FULL` where a lost row would be lost feedback or a lost label.
Each concern owns its tables in its own module (conversations, review, labels) and
creates them with `ensure_schema` on first use.
"""

from endcloud.store.db import connect, ensure_schema

__all__ = ["connect", "ensure_schema"]
