"""Source for the memory tests' child processes: a child measures its own anonymous memory
(heap and LMDB's dirty pages, not mapped files), so one run is not disturbed by the test."""

ANONYMOUS_BYTES = """
def anonymous_bytes():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
"""

# peak_rise(work): work()'s result and how far anonymous memory rose while it ran (sampled
# every 5 ms on a thread, and once more at the end).
PEAK_RISE = ANONYMOUS_BYTES + """
import threading

def peak_rise(work):
    base = peak = anonymous_bytes()
    done = threading.Event()

    def sample():
        nonlocal peak
        while not done.wait(0.005):
            peak = max(peak, anonymous_bytes())

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        result = work()
    finally:
        done.set()
        sampler.join()
    return result, max(peak, anonymous_bytes()) - base
"""
