"""The one error type for bad input: the CLI turns it into one line on stderr and exit code 2.

It subclasses ValueError so that library callers who catch ValueError (the route checks promise
ValueError in docs/design.md §4) see it too.
"""


class DuoError(ValueError):
    """Bad input named in one line: a missing file, an unknown key, a corrupt checkpoint."""
