"""One log format for every process and thread: time, stage, level, message."""

from __future__ import annotations

import logging
import sys


def setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(stream=sys.stderr, level=getattr(logging, level),
                        format="%(asctime)s.%(msecs)03d %(name)-18s %(levelname)-7s %(message)s",
                        datefmt="%H:%M:%S", force=True)
