"""Which analyzer class runs a manifest entry, by the entry's ``kind``.

A new model family plugs in here: its module, and one line below.
"""

from __future__ import annotations

from livemod.vision.classifier import ImageClassifierAnalyzer
from livemod.vision.nudenet import NudeNetAnalyzer
from livemod.vision.opennsfw import OpenNsfwAnalyzer

AnalyzerClass = type[NudeNetAnalyzer] | type[OpenNsfwAnalyzer] | type[ImageClassifierAnalyzer]

ANALYZER_KINDS: dict[str, AnalyzerClass] = {
    "yolov8-detector": NudeNetAnalyzer,
    "nsfw-classifier": OpenNsfwAnalyzer,
    "image-classifier": ImageClassifierAnalyzer,
}
