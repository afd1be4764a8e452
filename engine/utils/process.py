"""Whether a process named in a file still runs: one home for the question.

A training run's model card and a folder's lock record the process that holds them (host, pid,
and where the system tells it, the process's start time). Every reader asks the same question of
such a record: the Runs panel, `report`, `train` (never two trainings in one run folder), the
lock of an open folder. A pid that the system has since given to another process (same pid,
another start time) is not taken for the original, and a zombie (killed, not yet reaped by its
parent) is dead. On Windows the check opens the process: `os.kill(pid, 0)` would terminate it.
"""
from __future__ import annotations

import os
import platform
import sys
from typing import Any


def this_host() -> str:
    return platform.node()


def process_marker() -> dict[str, Any]:
    """This process, as a record that another process can check with `marker_alive`."""
    marker: dict[str, Any] = {"pid": os.getpid(), "host": this_host()}
    started = start_time(os.getpid())
    if started is not None:
        marker["process_started"] = started
    return marker


def marker_alive(record: dict[str, Any]) -> bool | None:
    """True / False for a record of a process on this computer; None when it names another
    computer (or no pid): that cannot be checked from here."""
    pid = record.get("pid")
    if record.get("host") != this_host() or not isinstance(pid, int) or isinstance(pid, bool):
        return None
    return process_alive(pid, record.get("process_started"))


def process_alive(pid: int, started: int | None = None) -> bool:
    """Whether process `pid` of this computer runs (and, given `started`, is the one that started then)."""
    if pid <= 0:
        return False
    if sys.platform == "win32":
        return _windows_alive(pid)
    stat = _linux_stat(pid)
    if stat is not None:
        state, ticks = stat
        if state in ("Z", "X"):  # killed, waiting for its parent to reap it: gone
            return False
        return started is None or ticks == started
    try:
        os.kill(pid, 0)  # POSIX: signal 0 only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, owned by someone else
    except OSError:
        return False
    return True


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux), else None."""
    stat = _linux_stat(pid)
    return None if stat is None else stat[1]


def _linux_stat(pid: int) -> tuple[str, int] | None:
    """(state, start time) from /proc/<pid>/stat; None where there is no /proc, or no such process
    (then the caller's os.kill says which)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            text = fh.read()
    except OSError:
        return None
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after the last ")"
    fields = text[text.rfind(")") + 2:].split()
    try:
        return fields[0], int(fields[19])
    except (IndexError, ValueError):
        return None


def _windows_alive(pid: int) -> bool:  # pragma: no cover - Windows only
    import ctypes
    from ctypes import wintypes

    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    kernel32.OpenProcess.restype = wintypes.HANDLE
    kernel32.OpenProcess.argtypes = (wintypes.DWORD, wintypes.BOOL, wintypes.DWORD)
    kernel32.GetExitCodeProcess.argtypes = (wintypes.HANDLE, ctypes.POINTER(wintypes.DWORD))
    kernel32.CloseHandle.argtypes = (wintypes.HANDLE,)
    handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
    if not handle:
        return ctypes.get_last_error() == 5  # ERROR_ACCESS_DENIED: it exists, owned by someone else
    try:
        code = wintypes.DWORD()
        if not kernel32.GetExitCodeProcess(handle, ctypes.byref(code)):
            return True
        return code.value == 259  # STILL_ACTIVE
    finally:
        kernel32.CloseHandle(handle)


__all__ = ["marker_alive", "process_alive", "process_marker", "start_time", "this_host"]
