"""The numbers the paper fixes (Tables II and IV, eq. 1): one frozen dataclass, `PAPER`.

Every room reads its defaults from here (the tuners' Table IV settings, the teacher's
Table II shot count, the scorers' α and Θ), and every one is overridable by a flag or a
setting; nothing else in endcloud restates them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Paper:
    """The numbers the paper fixes (Tables II, IV; eq. 1). All overridable by flags."""

    shots: int = 500  # Table II: N question-answer examples in the prompt
    max_input_len: int = 256  # Table IV
    max_output_len: int = 512
    learning_rate: float = 5e-5
    batch_size: int = 1
    lora_r: int = 8
    lora_alpha: int = 32
    lora_dropout: float = 0.1
    num_virtual_tokens: int = 128
    top_p: float = 0.8
    temperature: float = 0.6
    alpha: float = 0.8  # eq. 1: Final = α·Sim + (1−α)·Match
    theta: float = 0.2  # Θ: when Match(query, cloud) < Θ, Final = Sim


PAPER = Paper()
