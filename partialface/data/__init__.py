"""Data layer: image reading, LFW layout and pairs files, identity folders."""
