"""Whisper's CPU budget and fair order: the shared pure ``livemod.budget`` (moved there so
OCR, a sibling stage, can use it too). ``asr.max_cpu`` sets the rate; a window that ends an
utterance is ``urgent``; a stream with a recent policy hit is ``flag``-ged."""

from livemod.budget import FLAGGED_FACTOR, URGENT_FACTOR, Clock, CpuBudget, FairQueue

__all__ = ["FLAGGED_FACTOR", "URGENT_FACTOR", "Clock", "CpuBudget", "FairQueue"]
