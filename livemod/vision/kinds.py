"""Which analyzer class runs a manifest entry, by the entry's ``kind``.

A new model family plugs in here: its module, and one line below.
"""

from __future__ import annotations

from livemod.vision.nudenet import NudeNetAnalyzer
from livemod.vision.opennsfw import OpenNsfwAnalyzer

ANALYZER_KINDS: dict[str, type[NudeNetAnalyzer] | type[OpenNsfwAnalyzer]] = {
    "yolov8-detector": NudeNetAnalyzer,
    "nsfw-classifier": OpenNsfwAnalyzer,
}
