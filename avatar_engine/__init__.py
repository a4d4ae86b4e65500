"""avatar-renderer: one portrait + one speech recording -> a lip-synced talking-head MP4."""

__version__ = "0.1.0"
