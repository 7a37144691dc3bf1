"""livemod: a self-hosted, real-time moderation daemon for live video."""

__version__ = "0.1.0"
