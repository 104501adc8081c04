"""Source for the memory tests' child processes: a child measures its own anonymous memory
(heap and LMDB's dirty pages, not mapped files), so one run is not disturbed by the test."""

ANONYMOUS_BYTES = """
def anonymous_bytes():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
"""
