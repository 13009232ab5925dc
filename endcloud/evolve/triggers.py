"""What makes a served turn a lesson: the paper's triggers, as pure functions.

Paper §III: "when the end model's output dissatisfies the user's demand (e.g., gets a low
score), the same query by the user will be input into the cloud model. The output of the
cloud model will then become a pseudo label". Here the triggers are:

  downvote    a customer rated the reply 1–2 (thumbs down)        -> learn the cloud reply
  low_score   the shadow-scored Final (eq. 1) fell below a bar       -> learn the cloud reply
  takeover    the router handed the turn to the cloud                -> learn the cloud reply
  correction  the customer's feedback carried a corrected reply      -> learn it (auto trust)
  upvote      a customer rated an END reply 4–5                      -> reinforce it (auto trust)
  review      a person approved or edited a reply in /review         -> learn it (human trust)

Each function maps store rows to `PseudoLabel`s; nothing here touches a network or a model.
A trigger that needs a cloud reply which the turn does not have (a downvoted end reply)
returns the label with `label=""` and `cloud_reply=None`: the loop asks the teacher.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from endcloud.scoring.final import should_escalate
from endcloud.store.labels import PseudoLabel


@dataclass
class TriggerSettings:
    low_score: float = 0.45  # Final below this (shadow-scored) makes a lesson
    downvote_max: int = 2  # ratings at or below are dissatisfaction
    upvote_min: int = 4  # ratings at or above on an end reply reinforce it
    learn_takeovers: bool = True
    learn_upvotes: bool = True


def from_reply(row: dict[str, Any], *, customer: str | None, settings: TriggerSettings) -> list[PseudoLabel]:
    """Lessons in one served reply row (ConversationStore.iter_replies shape)."""
    out: list[PseudoLabel] = []
    mid = row["message_id"]
    end_text, cloud_text = row.get("end_text"), row.get("cloud_text")
    scores = row.get("scores") or {}
    ctx = row.get("context") or []
    base = dict(source_id=mid, query=row["query"], context=ctx, end_reply=end_text, cloud_reply=cloud_text,
                scores=scores, customer=customer, trust="auto")
    ratings = [f.get("rating") for f in row.get("feedback") or [] if f.get("rating") is not None]
    worst = min(ratings) if ratings else None
    best = max(ratings) if ratings else None

    unhappy = worst is not None and worst <= settings.downvote_max
    final = scores.get("final")
    low = final is not None and should_escalate(float(final), settings.low_score)
    took_over = row.get("answered_by") == "cloud" and bool(cloud_text)

    if unhappy:
        out.append(PseudoLabel(trigger="downvote", label=cloud_text or "", **base))
    elif low:
        out.append(PseudoLabel(trigger="low_score", label=cloud_text or "", **base))
    elif took_over and settings.learn_takeovers:
        out.append(PseudoLabel(trigger="takeover", label=cloud_text, **base))
    for f in row.get("feedback") or []:
        if f.get("correction"):
            out.append(PseudoLabel(trigger="correction", label=f["correction"], **base))
            break
    if (settings.learn_upvotes and not unhappy and best is not None and best >= settings.upvote_min
            and row.get("answered_by") == "end" and end_text):
        out.append(PseudoLabel(trigger="upvote", label=end_text, **base))
    return out


def from_review(items_with_verdicts: Iterable[tuple[Any, Any]]) -> list[PseudoLabel]:
    """Human verdicts (ReviewItem, latest Verdict) -> human-trust labels; rejects give none."""
    out = []
    for item, verdict in items_with_verdicts:
        if verdict.verdict == "edit" and verdict.corrected_text:
            text = verdict.corrected_text
        elif verdict.verdict == "approve":
            text = item.cloud_reply or item.end_reply
        else:
            continue
        out.append(PseudoLabel(source_id=f"review:{item.id}", trigger="review", trust="human", query=item.query,
                               label=text, context=list(item.context or []), end_reply=item.end_reply,
                               cloud_reply=item.cloud_reply, scores={"final": item.final}, customer=None))
    return out
