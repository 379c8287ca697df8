"""Run a toolkit CLI's `main()` in-process, as a user's shell would (argv in, exit code out)."""

from __future__ import annotations

import sys
from collections.abc import Callable


def run_main(main: Callable[[], None], prog: str, *args: object) -> int:
    """The exit code of `prog args…` (0 when main returns normally)."""
    argv = sys.argv
    sys.argv = [prog, *map(str, args)]
    try:
        main()
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    finally:
        sys.argv = argv
    return 0
