"""Run the fault-injecting server double (`FaultyCloud`) on its own, for benchmarks and manual tests.

    python -m endcloud.testing --latency 0.2 --p429 0.04 --p500 0.03 --pmalformed 0.03

Prints its base URL on the first line of stdout, then serves until interrupted.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from endcloud.testing.cloud import FaultyCloud


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m endcloud.testing", description=__doc__.splitlines()[0])
    for name in ("latency", "p429", "p500", "ptimeout", "pmalformed", "pempty", "drip"):
        ap.add_argument(f"--{name}", type=float, default=0.0)
    ap.add_argument("--retry-after", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with FaultyCloud(latency=a.latency, p429=a.p429, p500=a.p500, ptimeout=a.ptimeout, pmalformed=a.pmalformed,
                     pempty=a.pempty, drip=a.drip, retry_after=a.retry_after, seed=a.seed) as cloud:
        print(cloud.base_url, flush=True)
        try:
            stop.wait()
        except KeyboardInterrupt:
            pass
        print(f"served {len(cloud.requests)} requests: " + ", ".join(
            f"{o}={cloud.outcomes.count(o)}" for o in sorted(set(cloud.outcomes))), file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
