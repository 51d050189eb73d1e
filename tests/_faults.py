"""Fault injection for the tests: a real ``kill -9`` at a chosen point of a function.

``killed(fn, (module, "name", n), ...)`` runs ``fn()`` in a forked child in which the n-th
call of ``module.name`` sends SIGKILL to the child itself (before the call runs), so no
``finally``, ``except`` or ``atexit`` cleanup happens, exactly as with ``kill -9``. It
returns the signal that ended the child (None when the point was never reached).
"""

import os
import signal
import traceback


def _kill_on_call(module, name: str, n: int) -> None:
    original = getattr(module, name)
    calls = [0]

    def wrapper(*args, **kwargs):
        calls[0] += 1
        if calls[0] == n:
            os.kill(os.getpid(), signal.SIGKILL)
        return original(*args, **kwargs)

    setattr(module, name, wrapper)


def killed(fn, *points) -> int | None:
    """Run ``fn()`` in a child killed by SIGKILL at the first of ``points`` reached; return the signal."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 0
        try:
            for module, name, n in points:
                _kill_on_call(module, name, n)
            fn()
        except BaseException:
            traceback.print_exc()
            code = 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
