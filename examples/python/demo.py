"""Starts consumer.py and producer.py as two separate programs that find each other by name."""

import os
import subprocess
import sys
from pathlib import Path

here = Path(__file__).parent
name = f"demo-frames-{os.getpid()}"
consumer = subprocess.Popen([sys.executable, str(here / "consumer.py"), name])
producer = subprocess.run([sys.executable, str(here / "producer.py"), name, "200"], check=True)
sys.exit(consumer.wait())
