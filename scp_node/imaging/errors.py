"""The imaging library's one exception base.

Everything the library raises about the data it was given (a file it cannot read, pixels it
cannot code, a blob that does not rebuild, a codec that cannot run here) derives from
ImagingError, so callers catch data problems by this type and let programming errors
(TypeError, AttributeError, a bare ValueError from a bug) surface as the bugs they are.
Codecs translate the errors of the libraries they wrap into ImagingError subclasses.
"""

from __future__ import annotations


class ImagingError(Exception):
    """A problem with an image, a blob or a codec's availability, not with the program."""
