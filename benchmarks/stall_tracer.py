"""Where the GUI thread's event loop was blocked: every thread's innermost frames, sampled by a
watchdog thread once the loop has not ticked for 50 ms, and every 100 ms while it still has not
(the GUI benchmarks' --trace-stalls)."""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path


def start_stall_tracer(last_tick: list[float], traces: list[str]) -> None:
    """A daemon thread that, once `last_tick[0]` (perf_counter of the GUI timer's last tick) is 50 ms
    old, appends every thread's innermost frames to `traces`. A thread holding the GIL in C code
    delays this sample too: the frames are where the threads are when it lets go."""
    import threading
    import traceback

    def watch() -> None:
        reported, sampled = 0.0, 0.0
        while True:
            time.sleep(0.005)
            now = time.perf_counter()
            # at 50 ms into a stall, then every 100 ms while it lasts: a long stall shows its course
            if now - last_tick[0] > 0.05 and (reported != last_tick[0] or now - sampled > 0.1):
                reported, sampled = last_tick[0], now
                names = {t.ident: t.name for t in threading.enumerate()}
                lines = [f"--- event loop blocked {1000 * (now - last_tick[0]):.0f} ms so far"]
                for ident, frame in sys._current_frames().items():
                    if ident == threading.get_ident():
                        continue
                    stack = traceback.extract_stack(frame)[-int(os.environ.get("STALL_FRAMES", "5")):]
                    lines.append(f"  [{names.get(ident, ident)}] " + " <- ".join(
                        f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in reversed(stack)))
                traces.append("\n".join(lines))

    threading.Thread(target=watch, daemon=True, name="stall-tracer").start()

