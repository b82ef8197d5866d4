"""The one base class of the errors a user can fix.

Every error that means "this file, setting or folder is wrong, and here is what to do" derives
from :class:`PureError`: a bad setting (:class:`pure.config.ConfigError`), a missing or broken
checkpoint, an unreadable image, a bad folder layout, ... Each command in :mod:`pure.cli` catches
it once and prints its message as one line (exit code 2); anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations


class PureError(Exception):
    """A mistake the user can fix; the message names the file or setting and the fix."""
