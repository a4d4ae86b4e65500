"""Live talking head: a WebSocket session that speaks audio as it arrives and streams fragmented MP4 (docs/LIVE.md)."""
