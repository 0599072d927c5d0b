"""imagegate: a self-hosted image-generation API gateway."""

__version__ = "0.1.0"
