"""What is said when: timed phones (for the lips) and timed words (for captions).

A synthesizer knows both exactly; for recorded speech they come from forced alignment. An
`AudioClip` may carry one, so engines and the caption stage use it instead of recognising speech.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .phonemes import Phone


@dataclass(frozen=True)
class Word:
    text: str  # as written in the input (punctuation attached), for display
    start_s: float
    end_s: float


@dataclass
class SpeechTimeline:
    phones: list[Phone] = field(default_factory=list)  # ARPAbet-like labels (see speech/ipa_phones.py)
    words: list[Word] = field(default_factory=list)
    source: str = "synthesizer"  # "synthesizer" or "alignment": how the times were found
