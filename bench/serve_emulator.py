"""Run one upstream emulator in its own process (for benchmarks): prints its URL, then serves until killed.

    python bench/serve_emulator.py stability --delay 5
"""
import argparse
import importlib
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("name", help="emulator module under tests/emulators (stability, openai, bfl, ...)")
    parser.add_argument("--delay", type=float, default=5.0, help="seconds before every generation answers")
    args = parser.parse_args()
    module = importlib.import_module(f"tests.emulators.{args.name}")
    kwargs = {"rate_limit": None} if args.name == "stability" else {}
    with module.emulator(**kwargs) as emu:
        emu.state["delay"] = args.delay
        for key in ("rate_limit", "concurrency_limit"):
            emu.state[key] = None  # benchmarks measure us, not the upstream's limits
        emu.state["max_concurrent"] = 1_000_000
        print(emu.url, flush=True)
        while True:
            time.sleep(3600)


if __name__ == "__main__":
    main()
