"""Benchmarks print figures and ratios; they never pass or fail on time.

Each benchmark names its group and its side ("understudy" or "reference")
and records how many entries one round processes; the summary prints
entries per second for both sides and their ratio.
"""

import sys
from pathlib import Path

# The pure-Python reference codec and table live with the tests.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


def pytest_terminal_summary(terminalreporter, config):
    session = getattr(config, "_benchmarksession", None)
    if session is None or not session.benchmarks:
        return
    groups = {}
    for bench in session.benchmarks:
        info = bench.extra_info
        if "entries" in info:
            groups.setdefault(bench.group or bench.name, {})[info["side"]] = info["entries"] / bench.stats.min
    memory = {b.group: b.extra_info["bytes_per_conn"] for b in session.benchmarks
              if "bytes_per_conn" in b.extra_info}
    write = terminalreporter.write_line
    write("")
    write("entries per second (best round), Rust engine through the Python API vs pure-Python reference:")
    for group, sides in sorted(groups.items()):
        ours, ref = sides.get("understudy"), sides.get("reference")
        line = f"  {group:<44} {ours / 1e6:9.2f} M/s" if ours else f"  {group:<44} {'-':>9}"
        if ref:
            line += f"   reference {ref / 1e6:8.3f} M/s"
        if ours and ref:
            line += f"   ratio {ours / ref:8.0f}x"
        if group in memory:
            line += f"   {memory[group]:.1f} bytes per connection"
        write(line)
