"""The event loop first: the server's compute threads run at a lower CPU priority.

Under load the cores are full with model calls and image decoding. A request that needs no
compute (a refusal, /healthz, /readyz, /metrics) is answered by the event loop, which then
waits behind that work for a time slice. On Linux a thread's nice value is its own, so the
server raises it (``os.setpriority`` on the thread id: no privilege needed) for every thread
except the event loop's: the model's thread, onnxruntime's and PyTorch's pools, and the
decoding workers. The work itself is not slowed when the loop is idle, which is most of the
time; only who runs first changes. Elsewhere (macOS, Windows) a process has one priority for
all its threads, and nothing is changed.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading

SUPPORTED = sys.platform.startswith("linux") and hasattr(os, "setpriority")
_lowered = threading.local()


def _nice(tid: int, step: int) -> None:
    """Thread ``tid`` at ``step`` nice levels below the main thread's, unless already lower."""
    with contextlib.suppress(OSError):  # a thread that ended meanwhile, or a policy refusing it
        target = min(19, os.getpriority(os.PRIO_PROCESS, os.getpid()) + step)
        if os.getpriority(os.PRIO_PROCESS, tid) < target:
            os.setpriority(os.PRIO_PROCESS, tid, target)


def lower_this_thread(step: int) -> None:
    """The calling thread at ``step`` nice levels below the main thread (once per thread)."""
    if not SUPPORTED or step <= 0 or getattr(_lowered, "done", False):
        return
    _nice(threading.get_native_id(), step)
    _lowered.done = True


def lower_other_threads(step: int) -> int:
    """Every thread of this process but the caller's and the main thread's (the event loop's,
    and a host program's when the app runs inside one) at ``step`` nice levels below the main
    thread; how many threads that was."""
    if not SUPPORTED or step <= 0:
        return 0
    keep = {threading.get_native_id(), os.getpid()}  # the main thread's id is the process id
    lowered = 0
    with contextlib.suppress(OSError):
        for entry in os.listdir("/proc/self/task"):
            tid = int(entry)
            if tid not in keep:
                _nice(tid, step)
                lowered += 1
    # threads created later by the model's thread inherit its lowered priority; the decoding
    # workers are made by the event loop's thread and lower themselves (lower_this_thread)
    return lowered
