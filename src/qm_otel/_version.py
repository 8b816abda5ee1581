"""The distribution's version, read by the build and by the resource."""

__version__ = "0.1.0"
