"""The moderated relay: a delayed copy of a stream with the actions applied to it.

``plan`` (pure: which frames and audio an action covers, when a frame may leave),
``picture`` (pixelation, slate), ``output`` (H.264/AAC with PyAV, RTMP or HLS, retried
with backoff), ``relay`` (the delay line and its thread), ``link`` (the session's
asyncio shell). See docs/relay.md.
"""
